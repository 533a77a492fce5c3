"""Pure parts of the router: reading the model name off the wire, picking a replica, metering load.

No asyncio, grpc or nats here; time is always an argument.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

from ebbflow.runtime.wire import LATENCY_BUCKETS_S


SERVICE = "inference.GRPCInferenceService"
"""The gRPC service the router serves and every replica (tritonserver) answers."""


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


@dataclass(frozen=True)
class RequestHead:
    """What the router reads off a request: the model it names and the client's request id."""

    model: str
    id: str = ""


def _walk(data: bytes, wanted: frozenset[int]) -> dict[int, list[bytes | int]]:
    """Values of the wanted top-level fields, walking the whole message so garbled input is refused."""
    found: dict[int, list[bytes | int]] = {}
    pos = 0
    end = len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise MalformedRequest("field number 0")
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
            if number in wanted:
                found.setdefault(number, []).append(value)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            if number in wanted:
                found.setdefault(number, []).append(data[pos : pos + length])
            pos += length
        elif wire_type == 5:
            pos += 4
        else:
            raise MalformedRequest(f"unsupported wire type {wire_type}")
        if pos > end:
            raise MalformedRequest("message truncated")
    return found


def _text(value: bytes | int, what: str) -> str:
    if not isinstance(value, bytes):
        raise MalformedRequest(f"{what} has the wrong wire type")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest(f"{what} is not valid UTF-8") from None


_HEAD_FIELDS = frozenset({1, 3})


def read_request_head(data: bytes) -> RequestHead:
    """`model_name` (field 1) and `id` (field 3) of a serialized request, decoding nothing else.

    Every Triton request that names a model (ModelInferRequest, ModelMetadataRequest,
    ModelConfigRequest, ModelReadyRequest, ModelStatisticsRequest) keeps the name in
    field 1; ModelInferRequest keeps its id in field 3 (field 3 of the others is
    never a string, and is ignored for them).
    """
    found = _walk(data, _HEAD_FIELDS)
    names = found.get(1)
    if not names or not names[-1]:
        raise MalformedRequest("model_name is missing")
    ids = [v for v in found.get(3, ()) if isinstance(v, bytes)]
    return RequestHead(model=_text(names[-1], "model_name"), id=_text(ids[-1], "id") if ids else "")


def read_model_name(data: bytes) -> str:
    return read_request_head(data).model


@dataclass(frozen=True)
class StreamResponseHead:
    """What the router reads off one ModelStreamInferResponse."""

    id: str
    final: bool
    error: str


_FINAL_FLAG = b"triton_final_response"


def read_stream_response(data: bytes) -> StreamResponseHead:
    """Request id, final-response flag and error of a ModelStreamInferResponse, tensors untouched.

    ModelStreamInferResponse: error_message = 1, infer_response = 2.
    ModelInferResponse: id = 3, parameters = 4 (map<string, InferParameter>: key = 1, value = 2).
    InferParameter: bool_param = 1.
    """
    outer = _walk(data, frozenset({1, 2}))
    error = _text(outer[1][-1], "error_message") if 1 in outer else ""
    if 2 not in outer:
        return StreamResponseHead(id="", final=True, error=error)
    inner_bytes = outer[2][-1]
    if not isinstance(inner_bytes, bytes):
        raise MalformedRequest("infer_response has the wrong wire type")
    inner = _walk(inner_bytes, frozenset({3, 4}))
    final = False
    for entry in inner.get(4, ()):
        if not isinstance(entry, bytes):
            continue
        pair = _walk(entry, frozenset({1, 2}))
        if pair.get(1, [b""])[-1] == _FINAL_FLAG and 2 in pair and isinstance(pair[2][-1], bytes):
            final = bool(_walk(pair[2][-1], frozenset({1})).get(1, [0])[-1])
    ids = inner.get(3)
    return StreamResponseHead(id=_text(ids[-1], "id") if ids else "", final=final, error=error)


# ---- picking a replica ------------------------------------------------------


class Routing(str, Enum):
    """How a model's requests are spread over its ready replicas (per model, in its policy)."""

    LEAST_OUTSTANDING = "least_outstanding"
    POWER_OF_TWO = "power_of_two"
    ROUND_ROBIN = "round_robin"


@dataclass(frozen=True)
class Candidate:
    """A ready replica as the picking rule sees it."""

    key: str
    in_flight: int
    """Requests this router has outstanding on the replica (exact, current)."""
    pending: float = 0.0
    """Triton's own queue depth from the last scrape: up to a second old, so only a tie-breaker."""


def _load(candidate: Candidate) -> tuple[int, float]:
    return candidate.in_flight, candidate.pending


def pick_replica(candidates: Sequence[Candidate], draw: int, routing: Routing = Routing.LEAST_OUTSTANDING) -> Candidate | None:
    """The replica for the next request, as a pure function of a snapshot.

    `draw` is any non-negative integer the caller varies per request: a counter
    makes ties and round-robin rotate, a random number makes power-of-two
    pick two random replicas (Mitzenmacher; Ray Serve's default).
    """
    if not candidates:
        return None
    ordered = sorted(candidates, key=lambda c: c.key)
    n = len(ordered)
    if routing is Routing.ROUND_ROBIN or n == 1:
        return ordered[draw % n]
    if routing is Routing.POWER_OF_TWO:
        first = draw % n
        second = (draw // n) % (n - 1)
        second += second >= first
        a, b = ordered[first], ordered[second]
        return b if _load(b) < _load(a) else a
    fewest = min(_load(c) for c in ordered)
    tied = [c for c in ordered if _load(c) == fewest]
    return tied[draw % len(tied)]


@dataclass
class Ejector:
    """Outlier ejection: a replica that fails `after_failures` times in a row sits out `eject_s` seconds.

    Like Envoy's consecutive-5xx detector, with its panic rule: when every
    replica is ejected the router uses them all rather than none.
    """

    after_failures: int = 3
    eject_s: float = 10.0
    _streak: dict[str, int] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)

    def record(self, key: str, ok: bool, now_s: float) -> bool:
        """Record one outcome; True when this failure ejected the replica."""
        if ok:
            self._streak.pop(key, None)
            return False
        streak = self._streak.get(key, 0) + 1
        self._streak[key] = streak
        if streak >= self.after_failures and not self.is_ejected(key, now_s):
            self._until[key] = now_s + self.eject_s
            self._streak[key] = 0
            return True
        return False

    def is_ejected(self, key: str, now_s: float) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if now_s >= until:
            del self._until[key]
            return False
        return True

    def usable(self, candidates: Sequence[Candidate], now_s: float) -> list[Candidate]:
        kept = [c for c in candidates if not self.is_ejected(c.key, now_s)]
        return kept or list(candidates)

    def forget(self, keys_alive: set[str]) -> None:
        for table in (self._streak, self._until):
            for key in [k for k in table if k not in keys_alive]:
                del table[key]


# ---- holding requests while a model scales from zero -----------------------


class QueueFull(Exception):
    """A hold queue cannot take one more request."""


@dataclass
class HoldQueue:
    """Admission and order of requests held for one model while no replica is ready.

    Bounded in count and bytes; tickets come out in arrival order. The shell
    attaches a future to each ticket.
    """

    max_requests: int
    max_bytes: int
    count: int = 0
    bytes: int = 0
    _next: int = 0
    _sizes: dict[int, int] = field(default_factory=dict)

    def admit(self, size: int) -> int:
        """A ticket for a request of `size` bytes, or QueueFull saying which bound it hit."""
        if self.count + 1 > self.max_requests:
            raise QueueFull(f"{self.count} requests already held (limit {self.max_requests})")
        if self.bytes + size > self.max_bytes:
            raise QueueFull(f"{self.bytes + size} bytes would be held (limit {self.max_bytes})")
        ticket = self._next
        self._next += 1
        self._sizes[ticket] = size
        self.count += 1
        self.bytes += size
        return ticket

    def leave(self, ticket: int) -> None:
        size = self._sizes.pop(ticket, None)
        if size is not None:
            self.count -= 1
            self.bytes -= size

    def in_order(self) -> list[int]:
        return sorted(self._sizes)


@dataclass
class RetryBudget:
    """Bytes the router may keep in memory to resend requests elsewhere (a request over budget is not retried)."""

    max_bytes: int
    held: int = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.max_bytes:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


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
        self.completed(latency_s, ok)

    def completed(self, latency_s: float, ok: bool) -> None:
        """A request's latency and outcome (without moving the in-flight count)."""
        if not ok:
            self.errors += 1
        self._counts[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
        self._sum_s += latency_s

    def observe(self, now_s: float, arrivals: int, in_flight: int) -> None:
        """Counts read from a proxy's statistics (the HAProxy front): new arrivals, and the in-flight count now."""
        self._advance(now_s)
        self.arrivals += arrivals
        self.in_flight = in_flight

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
