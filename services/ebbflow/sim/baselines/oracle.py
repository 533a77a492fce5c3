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

Asking for the target in every bin makes that oracle loose over a whole trace (it reaches ~99.9 % where
99.5 % is asked), so `tighten` derives a tighter one from it: the fewest GPU-seconds that meet the target
over the whole evaluation, not in every bin (see its docstring). Policies are scored against both.
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


TIGHTEN_MOVES = (4, 8, 16, 32)
"""How many candidate moves a round tries, coarse to fine: the bins above the floor cut into that many groups."""
VERIFY_RUNS = 3
"""Simulations kept back from a round's candidates to check the combined move (halving on an overshoot)."""
TIGHTEN_ROUNDS = 24
TIGHTEN_MAX_RUNS = 48
"""Simulations `tighten` may use: a bound on its time (each is a whole evaluation run), so the oracle it finds is
an upper bound on the tightest one, and reported as found."""


def tighten(
    plan: np.ndarray,
    run: Callable[[np.ndarray], tuple[Outcome, np.ndarray, np.ndarray]],
    target: float,
    floor: np.ndarray | None = None,
    reach: int = 0,
    min_replicas: int = 1,
    rounds: int = TIGHTEN_ROUNDS,
    max_runs: int = TIGHTEN_MAX_RUNS,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, Outcome, int]:
    """The tighter oracle: from a schedule meeting `target` (the per-bin oracle's), the fewest GPU-seconds
    that still meet it over the whole evaluation, wherever the misses fall.

    A Lagrangian relaxation of "minimise GPU-seconds subject to misses <= (1 - target) x requests". A move
    lowers one group of neighbouring bins above the throughput `floor` (by a replica, or 5 % of the bin's plan
    if more); simulated alone on the current schedule it has a price (GPU-seconds saved) and a cost (misses
    added). Moves are taken cheapest first by misses per GPU-second saved, the multiplier being the ratio at
    which the budget's slack runs out, and the combined schedule is simulated to check it, since moves
    interact through queues and the look-ahead window; when it overshoots, the cheaper half is tried. When
    no move is taken, the groups get smaller (TIGHTEN_MOVES). `reach` is the look-ahead window's (Ahead.reach): a move
    that leaves the replicas in force unchanged is not simulated. At most `max_runs` simulations. Returns the
    schedule, its outcome and the simulations used; the outcome's own attainment is what is reported."""
    outcome, total, missed = run(plan)
    used = 1
    budget = (1.0 - target) * float(total.sum())
    if missed.sum() > budget:
        return plan, outcome, used  # the start does not meet the target: nothing to tighten
    lowest = np.maximum(min_replicas, floor if floor is not None else min_replicas)
    level = 0
    for _ in range(rounds):
        if level >= len(TIGHTEN_MOVES) or used >= max_runs - VERIFY_RUNS:
            break
        in_force = _in_force(plan, reach)
        moves: list[tuple[float, float, np.ndarray]] = []  # (misses per GPU-second, misses added, lowered bins)
        for bins in _groups(plan > lowest, TIGHTEN_MOVES[level]):
            trial = _lowered(plan, bins, lowest)
            if np.array_equal(_in_force(trial, reach), in_force) or used >= max_runs - VERIFY_RUNS:
                continue
            tried, _, tried_missed = run(trial)
            used += 1
            saved = outcome.gpu_s - tried.gpu_s
            if saved > 0:
                added = max(0.0, float(tried_missed.sum() - missed.sum()))
                moves.append((added / saved, added, bins))
        if progress:
            progress(used)
        slack = budget - float(missed.sum())
        moves.sort(key=lambda m: m[0])
        taken = [m for m, spent in zip(moves, np.cumsum([m[1] for m in moves])) if spent <= slack]
        accepted = False
        while taken and used < max_runs:
            trial = _lowered(plan, np.logical_or.reduce([m[2] for m in taken]), lowest)
            tried, _, tried_missed = run(trial)
            used += 1
            if tried_missed.sum() <= budget and tried.gpu_s < outcome.gpu_s:
                plan, outcome, missed, accepted = trial, tried, tried_missed, True
                break
            taken = taken[: len(taken) // 2]
        if not accepted:
            level += 1  # nothing fits at this size: finer moves
    return plan, outcome, used


def _groups(above: np.ndarray, count: int) -> list[np.ndarray]:
    """The bins marked `above`, cut into at most `count` groups of neighbouring bins (as masks): the runs of
    marked bins split evenly by their number, a long run cut in pieces when there are fewer runs than groups."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist()))
    if not runs:
        return []
    per_run = max(1, -(-count // len(runs)))
    pieces = []
    for start, end in runs:
        cuts = np.unique(np.linspace(start, end, min(per_run, end - start) + 1).astype(np.int64))
        pieces += list(zip(cuts[:-1], cuts[1:]))
    out = []
    for group in np.array_split(np.arange(len(pieces)), min(count, len(pieces))):
        mask = np.zeros(len(above), dtype=bool)
        for index in group:
            start, end = pieces[index]
            mask[start:end] = True
        out.append(mask)
    return out


def _in_force(plan: np.ndarray, reach: int) -> np.ndarray:
    """The replicas each bin has with `reach` later bins' plans in force (Ahead.wanted)."""
    padded = np.concatenate([plan, np.full(reach, plan[-1])])
    return np.lib.stride_tricks.sliding_window_view(padded, reach + 1).max(axis=1)[: len(plan)]


def _lowered(plan: np.ndarray, bins: np.ndarray, lowest: np.ndarray) -> np.ndarray:
    step = np.maximum(1, np.floor(plan * 0.05)).astype(np.int64)
    return np.where(bins, np.maximum(lowest, plan - step), plan)


def static_peak(plan: np.ndarray, step_s: float) -> Schedule:
    return Schedule("static_peak", np.array([int(plan.max())]), step_s)
