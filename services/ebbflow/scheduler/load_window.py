"""Trailing windows over the scheduler's inputs: pure bookkeeping, time passed in.

The collector publishes a snapshot a second, each over its last interval, and
each router pushes its in-flight once a second. Read raw, a second of Poisson
noise (6 req/s arrive as 2 one second and 11 the next) became the rule's
demand, the time in system (in flight / arrivals) that turns a forecast into
replicas swung threefold, and the scale-down window then kept the highest of
thirty such recommendations. The rule reads means over windows instead, the
same ones the simulator feeds it: a stable window for the load and a short
(panic) window for bursts (Knative's 60 s and 6 s; the simulator's 30 s and
6 s).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

HOUR_S = 3600.0


@dataclass
class Samples:
    """Time-stamped samples of one quantity, kept for `keep_s`."""

    keep_s: float
    items: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, now_s: float, value: float) -> None:
        self.items.append((now_s, value))
        while self.items and self.items[0][0] <= now_s - self.keep_s:
            self.items.popleft()

    def mean(self, now_s: float, window_s: float) -> float | None:
        """Mean of the samples taken within the last window_s; None when there are none."""
        inside = [v for t, v in self.items if t > now_s - window_s]
        return sum(inside) / len(inside) if inside else None

    def last_at(self) -> float | None:
        return self.items[-1][0] if self.items else None


@dataclass
class LoadWindow:
    """One model's fresh snapshots (in flight, arrival rate) and the highest windowed rate of the last hour."""

    window_s: float
    in_flight: Samples = field(init=False)
    arrival_rps: Samples = field(init=False)
    peaks: deque[tuple[float, float]] = field(default_factory=deque)
    """(minute start, highest windowed arrival rate within it) over the last hour."""

    def __post_init__(self) -> None:
        self.in_flight = Samples(self.window_s)
        self.arrival_rps = Samples(self.window_s)

    def add(self, now_s: float, in_flight: float, arrival_rps: float) -> None:
        self.in_flight.add(now_s, max(0.0, in_flight))
        self.arrival_rps.add(now_s, max(0.0, arrival_rps))
        rate = self.arrival_rps.mean(now_s, self.window_s) or 0.0
        minute = now_s - now_s % 60.0
        if self.peaks and self.peaks[-1][0] == minute:
            self.peaks[-1] = (minute, max(self.peaks[-1][1], rate))
        else:
            self.peaks.append((minute, rate))
        while self.peaks and self.peaks[0][0] <= now_s - HOUR_S - 60.0:
            self.peaks.popleft()

    def means(self, now_s: float) -> tuple[float, float] | None:
        """(in flight, arrival rate) averaged over the window; None without a sample in it."""
        in_flight, arrival = self.in_flight.mean(now_s, self.window_s), self.arrival_rps.mean(now_s, self.window_s)
        if in_flight is None or arrival is None:
            return None
        return in_flight, arrival

    def recent_peak_rps(self, now_s: float) -> float:
        """The highest windowed arrival rate over the last hour (0 when none was seen)."""
        return max((rate for minute, rate in self.peaks if minute > now_s - HOUR_S - 60.0), default=0.0)


@dataclass
class PushWindow:
    """One router's pushed in-flight per model, kept for the burst window."""

    window_s: float
    pushes: deque[tuple[float, dict[str, float]]] = field(default_factory=deque)

    def add(self, now_s: float, in_flight: dict[str, float]) -> None:
        self.pushes.append((now_s, in_flight))
        while self.pushes and self.pushes[0][0] <= now_s - self.window_s:
            self.pushes.popleft()

    def mean(self, model: str, now_s: float) -> float | None:
        """The model's in-flight averaged over this router's pushes within the window; None when it pushed none for it."""
        inside = [loads[model] for t, loads in self.pushes if t > now_s - self.window_s and model in loads]
        return sum(inside) / len(inside) if inside else None

    def heard_at(self) -> float:
        return self.pushes[-1][0] if self.pushes else -float("inf")
