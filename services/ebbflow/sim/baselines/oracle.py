"""The clairvoyant oracle, and static peak provisioning.

The oracle knows every future arrival. Per bin (10 s), it finds the fewest replicas that meet the SLO,
by simulation rather than by formula and with no fixed headroom:
1. start every bin at the throughput floor, ceil(arrivals / the most a replica can complete);
2. simulate the schedule (each bin's replicas ordered `cold_start_s` earlier, kept while the current bin
   still needs them, drained after), and raise every bin whose requests miss the target attainment,
   plus the bin before it (its queue spills over), by 10 % (at least one replica); repeat;
3. then lower bins that met the SLO with room to spare, one replica at a time, keeping a change only where
   the simulation still meets the target.
The result is a schedule, simulated like any other policy; its own attainment is reported, not assumed.
Static peak runs the oracle's largest bin all the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ebbflow.sim.control import Observation, Schedule
from ebbflow.sim.des import Outcome


@dataclass
class Ahead:
    """Replicas wanted now: the most any bin from now until a cold start (plus one bin) ahead needs.

    Ordering a cold start ahead makes replicas ready in time; keeping a replica through a dip shorter than
    a cold start costs less GPU time than draining it and starting another, so the same window does both.
    """

    replicas: np.ndarray
    step_s: float
    cold_start_s: float
    name: str = "oracle"
    period_s: float = 1.0

    def __post_init__(self) -> None:
        reach = int(math.ceil((self.cold_start_s + self.period_s) / self.step_s)) + 1
        padded = np.concatenate([self.replicas, np.full(reach, self.replicas[-1])])
        self.wanted = np.lib.stride_tricks.sliding_window_view(padded, reach + 1).max(axis=1)[: len(self.replicas)]

    def decide(self, obs: Observation) -> int:
        return int(self.wanted[min(len(self.wanted) - 1, int(obs.now_s // self.step_s))])


def find_oracle(
    floor: np.ndarray,
    run: Callable[[np.ndarray], tuple[Outcome, np.ndarray, np.ndarray]],
    target: float,
    max_replicas: int,
    rounds: int = 25,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, Outcome, int]:
    """Search the per-bin schedule (see the module docstring). `run(schedule)` simulates it and returns the
    outcome with per-bin (requests, misses). Returns the best schedule meeting `target`, its outcome, rounds."""
    plan = np.clip(floor.astype(np.int64), 1, max_replicas)
    allowed = 1.0 - target
    best: tuple[float, np.ndarray, Outcome] | None = None
    used = 0
    for used in range(1, rounds + 1):
        outcome, total, missed = run(plan)
        if progress:
            progress(used)
        share = np.divide(missed, total, out=np.zeros_like(missed), where=total > 0)
        overall = missed.sum() / max(1.0, total.sum())
        if overall <= allowed and (best is None or outcome.gpu_s < best[0]):
            best = (outcome.gpu_s, plan.copy(), outcome)
        bad = share > allowed
        if overall <= allowed and not bad.any():
            break
        if not bad.any() or (plan[bad] >= max_replicas).all():
            break
        raise_ = bad | np.roll(bad, -1)
        plan = np.where(raise_, np.minimum(max_replicas, plan + np.maximum(1, np.ceil(plan * 0.1).astype(np.int64))), plan)
    if best is None:
        outcome, _, _ = run(plan)
        return plan, outcome, used
    plan = best[1]
    for _ in range(3):  # lowering passes
        lower = plan.copy()
        candidates = plan > 1
        lower[candidates] -= 1
        outcome, total, missed = run(lower)
        used += 1
        share = np.divide(missed, total, out=np.zeros_like(missed), where=total > 0)
        broken = share > allowed
        trial = np.where(broken | np.roll(broken, -1), plan, lower)
        if np.array_equal(trial, plan):
            break
        outcome, total, missed = run(trial)
        used += 1
        if missed.sum() / max(1.0, total.sum()) <= allowed and outcome.gpu_s < best[0]:
            plan, best = trial, (outcome.gpu_s, trial, outcome)
        else:
            break
    return best[1], best[2], used


def static_peak(plan: np.ndarray, step_s: float) -> Schedule:
    return Schedule("static_peak", np.array([int(plan.max())]), step_s)
