"""The clairvoyant oracle, and static peak provisioning.

The oracle knows every future arrival. Per bin (10 s), it finds the fewest replicas that meet the SLO,
by simulation rather than by formula and with no fixed headroom:
1. start every bin at the throughput floor, ceil(arrivals / the most a replica can complete);
2. simulate the schedule (each bin's replicas ordered `cold_start_s` earlier, kept while the current bin
   still needs them, drained after), and raise every bin whose requests miss the target attainment,
   plus the bin before it (its queue spills over), by 10 % (25 % past twice the allowed misses, 50 % past
   ten times; at least one replica); repeat;
3. then lower every bin by one replica at a time (up to LOWERING_PASSES times), keeping it lowered only
   where the simulation still meets the target there and in the bin after.
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
        reach = self.reach
        padded = np.concatenate([self.replicas, np.full(reach, self.replicas[-1])])
        self.wanted = np.lib.stride_tricks.sliding_window_view(padded, reach + 1).max(axis=1)[: len(self.replicas)]

    @property
    def reach(self) -> int:
        """Later bins whose plan counts now."""
        return int(math.ceil((self.cold_start_s + self.period_s) / self.step_s)) + 1

    def decide(self, obs: Observation) -> int:
        return int(self.wanted[min(len(self.wanted) - 1, int(obs.now_s // self.step_s))])


LOWERING_PASSES = 5


def find_oracle(
    floor: np.ndarray,
    run: Callable[[np.ndarray], tuple[Outcome, np.ndarray, np.ndarray]],
    target: float,
    max_replicas: int,
    rounds: int = 40,
    progress: Callable[[int], None] | None = None,
    reach: int = 0,
    min_replicas: int = 1,
) -> tuple[np.ndarray, Outcome, int]:
    """Search the per-bin schedule (see the module docstring). `run(schedule)` simulates it and returns the
    outcome with per-bin (requests, misses). `reach`: how many later bins set a bin's replicas in force (the
    Ahead window); `min_replicas` 0 lets bins with nothing to serve go to zero. Returns the best schedule meeting `target`, its outcome, rounds."""
    plan = np.clip(floor.astype(np.int64), min_replicas, max_replicas)
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
        # Far-off bins (a burst the floor missed by a mile) grow faster: +50 % at 10x the allowed misses.
        severity = share / max(allowed, 1e-9)
        growth = np.where(severity > 10, 0.5, np.where(severity > 2, 0.25, 0.1))
        growth = np.maximum(growth, np.roll(growth, -1))
        raise_ = bad | np.roll(bad, -1)
        bigger = plan + np.maximum(1, np.ceil(plan * growth).astype(np.int64))
        plan = np.where(raise_, np.minimum(max_replicas, bigger), plan)
    if best is None:
        outcome, _, _ = run(plan)
        return plan, outcome, used
    plan = best[1]
    frozen = np.zeros(len(plan), dtype=bool)  # bins that broke the SLO when lowered
    for _ in range(LOWERING_PASSES):
        lower = np.where(frozen | (plan <= min_replicas), plan, plan - 1)
        if np.array_equal(lower, plan):
            break
        outcome, total, missed = run(lower)
        used += 1
        share = np.divide(missed, total, out=np.zeros_like(missed), where=total > 0)
        broken = share > allowed
        # A bin's misses come from its own replicas in force (its plan and the next `reach` bins') and the
        # queue the bin before left: none of those may be lowered.
        for shift in range(-1, reach + 1):
            frozen |= np.roll(broken, -shift) if shift >= 0 else np.roll(broken, 1)
        trial = np.where(frozen, plan, lower)
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
