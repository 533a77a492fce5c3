"""What a simulated autoscaler sees and answers, in both simulator modes.

Telemetry (ebbflow.emulator.pool.Telemetry) is kept per whole second, as the
collector and router report it: arrivals and the time integral of requests
in the system (the router's in-flight, held requests included). A
controller is asked every `period_s` for the replicas it wants (starting and
ready, draining excluded); the fleet starts or drains replicas to match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ebbflow.emulator.pool import Telemetry


@dataclass
class Observation:
    """The controller's view at `now_s`: only complete telemetry buckets, plus the fleet's state."""

    now_s: float
    telemetry: Telemetry
    ready: int
    current: int
    """Replicas starting or ready (what a previous decision asked for, minus failures)."""
    _done: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._done = int(self.now_s // self.telemetry.step_s)

    def _window(self, values: np.ndarray, window_s: float) -> tuple[float, float]:
        k = max(1, int(round(window_s / self.telemetry.step_s)))
        lo = max(0, self._done - k)
        return float(values[lo : self._done].sum()), max(1, self._done - lo) * self.telemetry.step_s

    def arrival_rps(self, window_s: float) -> float:
        total, span = self._window(self.telemetry.arrivals, window_s)
        return total / span

    def in_flight(self, window_s: float) -> float:
        """Mean requests in the system over the last window_s."""
        area, span = self._window(self.telemetry.in_flight_area, window_s)
        return area / span

    def idle_s(self) -> float:
        """Seconds since the end of the last bucket with an arrival (-1: none yet), as the router's last-arrival time
        reads to the scheduler."""
        seen = np.flatnonzero(self.telemetry.arrivals[: self._done])
        return -1.0 if not len(seen) else self.now_s - (float(seen[-1]) + 1.0) * self.telemetry.step_s

    def slo_misses(self, window_s: float) -> tuple[float, float]:
        """(requests finished, of which missed the SLO) over the last window_s."""
        finished, _ = self._window(self.telemetry.finished, window_s)
        missed, _ = self._window(self.telemetry.missed, window_s)
        return finished, missed


class Controller(Protocol):
    name: str
    period_s: float

    def decide(self, obs: Observation) -> int:
        """Desired replicas (starting + ready)."""
        ...


@dataclass
class Schedule:
    """A fixed plan: replicas wanted per bin of `step_s` (the oracle's and static peak's form)."""

    name: str
    replicas: np.ndarray
    step_s: float
    period_s: float = 1.0

    def decide(self, obs: Observation) -> int:
        k = min(len(self.replicas) - 1, int(obs.now_s // self.step_s))
        return int(self.replicas[k])
