"""Pure parts of the collector: scrapes into intervals and rates, router windows merged.

Fail-safe by construction:
- a replica whose scrape failed keeps its last values and is marked stale;
- a model without fresh router telemetry is UNKNOWN, never idle;
- a counter that went down (replica restarted on the same address, model
  reloaded) means the counters restarted from zero: the interval's increase is
  the new value, as Prometheus' rate() does, so a rate is never negative;
- a counter that is missing from either scrape (model unloaded for a reload)
  gives no rate for that interval instead of a jump when it reappears.

Time is always an argument.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ebbflow.collector.metrics_text import MODEL_COUNTERS, MetricsText


@dataclass(frozen=True)
class Scrape:
    """One model's samples from one successful scrape of one replica."""

    time_s: float
    counters: Mapping[str, float]
    gauges: Mapping[str, float]


def scrape_of(parsed: MetricsText, model: str, time_s: float) -> Scrape | None:
    """The model's counters and gauges (with the host's and its GPUs'); None when the text lacks the model."""
    samples = parsed.models.get(model)
    if samples is None:
        return None
    counters = {name: samples[name] for name in MODEL_COUNTERS if name in samples}
    gauges = {
        "pending_requests": samples.get("nv_inference_pending_request_count", 0.0),
        "kv_cache_usage": samples.get("ebbflow_emulated_kv_cache_usage_ratio", 0.0),
        "cpu_utilization": parsed.host.get("nv_cpu_utilization", 0.0),
        "cpu_memory_used_bytes": parsed.host.get("nv_cpu_memory_used_bytes", 0.0),
    }
    if parsed.gpus:
        gpus = parsed.gpus.values()
        gauges["gpus"] = float(len(parsed.gpus))
        gauges["gpu_utilization"] = sum(g.get("nv_gpu_utilization", 0.0) for g in gpus) / len(parsed.gpus)
        gauges["gpu_memory_used_bytes"] = sum(g.get("nv_gpu_memory_used_bytes", 0.0) for g in gpus)
        gauges["gpu_memory_total_bytes"] = sum(g.get("nv_gpu_memory_total_bytes", 0.0) for g in gpus)
    return Scrape(time_s, counters, gauges)


@dataclass(frozen=True)
class Interval:
    """What one replica did between two consecutive scrapes."""

    end_s: float
    elapsed_s: float
    # Counter increases; a family missing from either scrape is missing here.
    deltas: Mapping[str, float]
    # Gauges at the end of the interval.
    gauges: Mapping[str, float]
    reset: bool


def interval_between(previous: Scrape, current: Scrape) -> Interval | None:
    """The increase of every counter present in both scrapes; None when no time passed.

    If any counter went down, the replica's counters restarted from zero
    during the interval (process restart or model reload), so every increase
    is the current value.
    """
    elapsed = current.time_s - previous.time_s
    if elapsed <= 0:
        return None
    shared = [name for name in current.counters if name in previous.counters]
    reset = any(current.counters[name] < previous.counters[name] for name in shared)
    deltas = {name: current.counters[name] if reset else current.counters[name] - previous.counters[name] for name in shared}
    return Interval(current.time_s, elapsed, deltas, current.gauges, reset)


@dataclass(frozen=True)
class ReplicaRates:
    """A replica's load over some intervals (docs/architecture.md "Load vocabulary")."""

    in_system: float = 0.0
    queued: float = 0.0
    pending_requests: float = 0.0
    batch_efficiency: float = 0.0
    inference_rps: float = 0.0
    request_rps: float = 0.0
    failure_rps: float = 0.0
    prompt_tokens_per_s: float = 0.0
    generated_tokens_per_s: float = 0.0
    kv_cache_usage: float = 0.0
    gpu_utilization: float = 0.0
    gpu_memory_used_bytes: float = 0.0
    gpu_memory_total_bytes: float = 0.0
    gpus: int = 0
    cpu_utilization: float = 0.0
    cpu_memory_used_bytes: float = 0.0
    counter_resets: int = 0


@dataclass(frozen=True)
class Totals:
    """Running sums over a replica's intervals: window figures are differences of two of these."""

    end_s: float = 0.0
    elapsed_s: float = 0.0
    intervals: int = 0
    resets: int = 0
    deltas: Mapping[str, float] = field(default_factory=dict)
    gauges: Mapping[str, float] = field(default_factory=dict)
    last_gauges: Mapping[str, float] = field(default_factory=dict)

    def add(self, interval: Interval) -> Totals:
        deltas = dict(self.deltas)
        for name, delta in interval.deltas.items():
            deltas[name] = deltas.get(name, 0.0) + delta
        gauges = dict(self.gauges)
        for name, value in interval.gauges.items():
            gauges[name] = gauges.get(name, 0.0) + value
        return Totals(interval.end_s, self.elapsed_s + interval.elapsed_s, self.intervals + 1, self.resets + interval.reset, deltas, gauges, interval.gauges)


def rates_between(start: Totals, end: Totals) -> ReplicaRates | None:
    """Counter increases over their total time (Little's law for in-system and queued); gauges averaged."""
    elapsed, count = end.elapsed_s - start.elapsed_s, end.intervals - start.intervals
    if elapsed <= 0 or count <= 0:
        return None

    def total(name: str) -> float:
        return end.deltas.get(name, 0.0) - start.deltas.get(name, 0.0)

    def mean(name: str) -> float:
        return (end.gauges.get(name, 0.0) - start.gauges.get(name, 0.0)) / count

    executions, failed = total("nv_inference_exec_count"), total("nv_inference_request_failure")
    return ReplicaRates(
        in_system=total("nv_inference_request_duration_us") * 1e-6 / elapsed,
        queued=total("nv_inference_queue_duration_us") * 1e-6 / elapsed,
        pending_requests=mean("pending_requests"),
        batch_efficiency=total("nv_inference_count") / executions if executions > 0 else 0.0,
        inference_rps=total("nv_inference_count") / elapsed,
        request_rps=(total("nv_inference_request_success") + failed) / elapsed,
        failure_rps=failed / elapsed,
        prompt_tokens_per_s=total("ebbflow_emulated_prompt_tokens_total") / elapsed,
        generated_tokens_per_s=total("ebbflow_emulated_generated_tokens_total") / elapsed,
        kv_cache_usage=mean("kv_cache_usage"),
        gpu_utilization=mean("gpu_utilization"),
        gpu_memory_used_bytes=mean("gpu_memory_used_bytes"),
        gpu_memory_total_bytes=mean("gpu_memory_total_bytes"),
        gpus=int(end.last_gauges.get("gpus", 0)),
        cpu_utilization=mean("cpu_utilization"),
        cpu_memory_used_bytes=mean("cpu_memory_used_bytes"),
        counter_resets=end.resets - start.resets,
    )


def rates_over(intervals: Sequence[Interval]) -> ReplicaRates | None:
    """Rates over consecutive intervals."""
    totals = Totals()
    for interval in intervals:
        totals = totals.add(interval)
    return rates_between(Totals(), totals)


@dataclass
class ReplicaTrack:
    """The scrape history of one replica: its last scrape and running totals over the last `keep_s` seconds."""

    keep_s: float
    last: Scrape | None = None
    last_success_s: float | None = None
    last_error: str = ""
    # Running totals after each interval, oldest first; the first is the base the others count from.
    marks: deque[Totals] = field(default_factory=lambda: deque([Totals()]))

    def observe(self, scrape: Scrape | None, now_s: float) -> None:
        """A successful scrape; None when it answered without the model (unloaded for a reload)."""
        self.last_success_s = now_s
        self.last_error = ""
        if scrape is not None and self.last is not None:
            interval = interval_between(self.last, scrape)
            if interval is not None:
                self.marks.append(self.marks[-1].add(interval))
        self.last = scrape
        while len(self.marks) > 2 and self.marks[1].end_s < now_s - self.keep_s:
            self.marks.popleft()

    def failed(self, reason: str) -> None:
        """A failed scrape: values are kept as they were, the age grows."""
        self.last_error = reason

    def status(self, now_s: float, stale_after_s: float) -> tuple[bool, str]:
        """(fresh, why not)."""
        if self.last_success_s is None:
            return False, self.last_error or "not scraped yet"
        age = now_s - self.last_success_s
        if age > stale_after_s:
            because = f": {self.last_error}" if self.last_error else ""
            return False, f"last successful scrape {age:.1f} s ago{because}"
        if self.last is None:
            return False, "model missing from its /metrics (loading or reloading)"
        if len(self.marks) < 2:
            return False, "waiting for a second scrape"
        return True, ""

    def rates(self, now_s: float, window_s: float) -> ReplicaRates | None:
        """Rates over the intervals that ended in the last window_s; the last known interval's when none did."""
        if len(self.marks) < 2:
            return None
        base = self.marks[-2]
        for index in range(len(self.marks) - 1, 0, -1):
            if self.marks[index].end_s <= now_s - window_s:
                break
            base = self.marks[index - 1]
        return rates_between(base, self.marks[-1])


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
    """The merged router picture of one model."""

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


def combine_replicas(rates: Sequence[ReplicaRates]) -> ReplicaRates:
    """A model's Triton side: sums over replicas; batch efficiency weighted by inferences, GPU utilisation a mean."""
    if not rates:
        return ReplicaRates()
    inferences = sum(r.inference_rps for r in rates)
    executions = sum(r.inference_rps / r.batch_efficiency for r in rates if r.batch_efficiency > 0)
    return ReplicaRates(
        in_system=sum(r.in_system for r in rates),
        queued=sum(r.queued for r in rates),
        pending_requests=sum(r.pending_requests for r in rates),
        batch_efficiency=inferences / executions if executions > 0 else 0.0,
        inference_rps=inferences,
        prompt_tokens_per_s=sum(r.prompt_tokens_per_s for r in rates),
        generated_tokens_per_s=sum(r.generated_tokens_per_s for r in rates),
        gpu_utilization=sum(r.gpu_utilization for r in rates) / len(rates),
    )
