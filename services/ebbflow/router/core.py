"""Pure parts of the router: reading the model name off the wire, picking a replica, metering load.

No asyncio, grpc or nats here; time is always an argument.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Sequence

# Fixed log-spaced latency buckets (seconds) shared by every router worker so
# histograms merge by addition: 1 ms to ~131 s, four buckets per doubling.
LATENCY_BUCKETS_S: tuple[float, ...] = tuple(0.001 * 2 ** (i / 4) for i in range(69))


class MalformedRequest(ValueError):
    """The bytes are not a valid ModelInferRequest (or lack a model name)."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise MalformedRequest("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise MalformedRequest("varint longer than 64 bits")


def read_model_name(data: bytes) -> str:
    """The `model_name` (field 1) of a serialized request, without decoding anything else.

    Every Triton request that names a model (ModelInferRequest, ModelMetadataRequest,
    ModelConfigRequest, ModelReadyRequest, ModelStatisticsRequest) keeps the name in
    field 1. The whole message is walked so truncated or garbled input is refused.
    """
    pos = 0
    name: bytes | None = None
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise MalformedRequest("field number 0")
        if wire_type == 0:
            _, pos = _read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            if number == 1:
                name = data[pos : pos + length]
            pos += length
        elif wire_type == 5:
            pos += 4
        else:
            raise MalformedRequest(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise MalformedRequest("message truncated")
    if not name:
        raise MalformedRequest("model_name is missing")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("model_name is not valid UTF-8") from None


@dataclass(frozen=True)
class Candidate:
    """A ready replica as the picking rule sees it."""

    key: str
    in_flight: int


def pick_replica(candidates: Sequence[Candidate], rotation: int) -> Candidate | None:
    """Least outstanding requests; ties broken by rotating through the tied replicas.

    `rotation` is any counter the caller advances per request, so idle replicas
    share load evenly instead of the first one taking everything.
    """
    if not candidates:
        return None
    fewest = min(c.in_flight for c in candidates)
    tied = sorted((c for c in candidates if c.in_flight == fewest), key=lambda c: c.key)
    return tied[rotation % len(tied)]


@dataclass
class WindowStats:
    """What one model saw during one telemetry window."""

    arrivals: int
    in_flight_avg: float
    in_flight_now: int
    errors: int
    latency_counts: list[int]
    latency_sum_s: float


@dataclass
class ModelMeter:
    """Arrivals, time-averaged in-flight and latencies of one model, windowed.

    The in-flight average integrates the in-flight count over time, so a
    burst that starts and ends inside one window still counts for how long
    it lasted.
    """

    window_start_s: float
    in_flight: int = 0
    arrivals: int = 0
    errors: int = 0
    _area: float = 0.0
    _last_change_s: float = 0.0
    _counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    _sum_s: float = 0.0

    def __post_init__(self) -> None:
        self._last_change_s = self.window_start_s

    def _advance(self, now_s: float) -> None:
        self._area += self.in_flight * max(0.0, now_s - self._last_change_s)
        self._last_change_s = max(self._last_change_s, now_s)

    def accept(self, now_s: float) -> None:
        """A request was accepted for routing (counts as an arrival)."""
        self._advance(now_s)
        self.in_flight += 1
        self.arrivals += 1

    def finish(self, now_s: float, latency_s: float, ok: bool) -> None:
        self._advance(now_s)
        self.in_flight -= 1
        if not ok:
            self.errors += 1
        self._counts[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
        self._sum_s += latency_s

    def close_window(self, now_s: float) -> WindowStats:
        """Return the window's stats and start a new window at now_s."""
        self._advance(now_s)
        length = now_s - self.window_start_s
        stats = WindowStats(
            arrivals=self.arrivals,
            in_flight_avg=self._area / length if length > 0 else float(self.in_flight),
            in_flight_now=self.in_flight,
            errors=self.errors,
            latency_counts=self._counts,
            latency_sum_s=self._sum_s,
        )
        self.window_start_s = now_s
        self.arrivals = 0
        self.errors = 0
        self._area = 0.0
        self._counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._sum_s = 0.0
        return stats


def histogram_quantile(counts: Sequence[int], quantile: float, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> float:
    """Quantile from bucket counts (upper bound of the bucket holding it); 0 when empty."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = quantile * total
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= rank:
            return bounds[index] if index < len(bounds) else bounds[-1]
    return bounds[-1]
