"""Pure parts of the collector: parsing Triton metrics, counters into rates, snapshots.

Fail-safe by construction: a replica whose scrape failed keeps its last
values and is marked stale; a model without fresh router telemetry is
UNKNOWN, never idle. Time is always an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

# The Triton families we use; everything else in the text is skipped cheaply.
WANTED = (
    b"nv_inference_request_duration_us",
    b"nv_inference_queue_duration_us",
    b"nv_inference_pending_request_count",
    b"nv_inference_count",
    b"nv_inference_exec_count",
)
COUNTERS = ("nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_count", "nv_inference_exec_count")


def parse_metrics(text: bytes, model: str) -> dict[str, float]:
    """Sum of each wanted family's samples whose labels name `model`.

    A byte-prefix filter, not a full Prometheus parser: lines of unwanted
    families are skipped without being split.
    """
    values: dict[str, float] = {}
    needle = f'model="{model}"'.encode()
    for line in text.splitlines():
        if not line.startswith(WANTED):
            continue
        brace = line.find(b"{")
        name_end = brace if brace >= 0 else line.find(b" ")
        if name_end < 0:
            continue
        if brace >= 0 and needle not in line[brace : line.rfind(b"}") + 1]:
            continue
        name = line[:name_end].decode()
        try:
            value = float(line.rsplit(b" ", 1)[1])
        except (IndexError, ValueError):
            continue
        values[name] = values.get(name, 0.0) + value
    return values


@dataclass(frozen=True)
class Scrape:
    """One successful scrape of one replica."""

    time_s: float
    values: Mapping[str, float]


@dataclass(frozen=True)
class ReplicaRates:
    in_system: float
    queued: float
    pending_requests: float
    batch_efficiency: float
    inference_rps: float


def _delta(current: float, previous: float) -> float:
    """Counter increase, treating a decrease as a reset (the counter restarted from zero)."""
    return current if current < previous else current - previous


def replica_rates(previous: Scrape, current: Scrape) -> ReplicaRates | None:
    """Rates between two scrapes; None when they don't span any time."""
    elapsed = current.time_s - previous.time_s
    if elapsed <= 0:
        return None
    get = lambda scrape, name: float(scrape.values.get(name, 0.0))  # noqa: E731
    deltas = {name: _delta(get(current, name), get(previous, name)) for name in COUNTERS}
    executions = deltas["nv_inference_exec_count"]
    return ReplicaRates(
        in_system=deltas["nv_inference_request_duration_us"] / 1e6 / elapsed,
        queued=deltas["nv_inference_queue_duration_us"] / 1e6 / elapsed,
        pending_requests=get(current, "nv_inference_pending_request_count"),
        batch_efficiency=deltas["nv_inference_count"] / executions if executions > 0 else 0.0,
        inference_rps=deltas["nv_inference_count"] / elapsed,
    )


@dataclass(frozen=True)
class RouterWindow:
    """One router's telemetry for one model and window."""

    router_id: str
    received_s: float
    window_s: float
    arrivals: int
    in_flight_avg: float
    latency_counts: tuple[int, ...]
    latency_sum_s: float


@dataclass(frozen=True)
class ModelLoad:
    """The merged picture of one model (mirrors ebbflow.v1.LoadSnapshot)."""

    model: str
    fresh: bool
    reason: str
    arrival_rps: float
    in_flight: float
    latency_counts: tuple[int, ...]
    latency_sum_s: float


def merge_router_windows(model: str, windows: Iterable[RouterWindow], now_s: float, stale_after_s: float) -> ModelLoad:
    """Sum the latest window of every router that reported recently.

    Demand and in-flight add up over routers. With no recent window the
    model is not fresh: its load is unknown, which is not the same as zero.
    """
    recent = [w for w in windows if now_s - w.received_s <= stale_after_s]
    if not recent:
        return ModelLoad(model, False, f"no router telemetry for '{model}' in the last {stale_after_s:g} s", 0.0, 0.0, (), 0.0)
    counts: list[int] = []
    for window in recent:
        if len(window.latency_counts) > len(counts):
            counts.extend([0] * (len(window.latency_counts) - len(counts)))
        for i, c in enumerate(window.latency_counts):
            counts[i] += c
    return ModelLoad(
        model=model,
        fresh=True,
        reason="",
        arrival_rps=sum(w.arrivals / w.window_s for w in recent if w.window_s > 0),
        in_flight=sum(w.in_flight_avg for w in recent),
        latency_counts=tuple(counts),
        latency_sum_s=sum(w.latency_sum_s for w in recent),
    )


def is_stale(last_success_s: float | None, now_s: float, stale_after_s: float) -> bool:
    return last_success_s is None or now_s - last_success_s > stale_after_s
