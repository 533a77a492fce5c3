"""Capacity model: how many replicas a request rate needs to meet a latency objective.

A replica runs `instances` model instances on one GPU; an idle instance takes
whatever is queued, up to `max_batch`, as one Triton batch (prefilled
together, decoded in lock-step until its longest request is done). With
heavy-tailed output lengths, batching and a shared GPU, no closed-form queue
fits well (an Erlang-C / Allen-Cunneen M/G/c estimate was 2-5x too
pessimistic at p99 against the fleet simulation), so the model is a
**measured curve**, as NVIDIA Dynamo's planner profiles an engine before
deployment: for a grid of per-replica request rates, the share of requests
meeting the SLO, TTFT quantiles and mean in-flight, measured by simulating a
small pool of replicas on the emulator's `service_time` with the operator's
token mix (ebbflow.scheduler.measure builds it; no GPU needed). Between grid points
the curve is interpolated. `calibration` scales the rates: the correction
learned from what the fleet actually achieved.

Pure: the curve is data, every query is arithmetic on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ebbflow.policy import describe_slo

DEFAULT_PROMPT_TOKENS = 1024
DEFAULT_OUTPUT_TOKENS = 128
LEVELS = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999)
"""TTFT quantile levels a curve keeps."""


@dataclass(frozen=True)
class Slo:
    """Latency objective: a request meets it when every set target holds; `percentile` of requests should."""

    ttft_s: float = 0.0
    tpot_s: float = 0.0
    latency_s: float = 0.0
    percentile: float = 99.0

    def __post_init__(self) -> None:
        if not 50 <= self.percentile < 100:
            raise ValueError(f"SLO percentile must be in [50, 100), got {self.percentile}")
        if min(self.ttft_s, self.tpot_s, self.latency_s) < 0:
            raise ValueError("SLO targets must be >= 0")
        if not (self.ttft_s or self.tpot_s or self.latency_s):
            raise ValueError("an SLO needs at least one of ttft_s, tpot_s, latency_s")

    @property
    def target(self) -> float:
        """Share of requests that should meet the targets."""
        return self.percentile / 100

    @property
    def limits(self) -> tuple[float, float, float]:
        """(TTFT, TPOT, latency) limits, inf where a target is not set."""
        return tuple(target or math.inf for target in (self.ttft_s, self.tpot_s, self.latency_s))  # type: ignore[return-value]

    def met(self, ttft_s: np.ndarray, tpot_s: np.ndarray, latency_s: np.ndarray) -> np.ndarray:
        """Per request: all set targets held (NaN, an unfinished request, never meets)."""
        ok = np.ones(len(ttft_s), dtype=bool)
        for limit, values in zip(self.limits, (ttft_s, tpot_s, latency_s)):
            ok &= np.nan_to_num(values, nan=np.inf) <= limit
        return ok

    def describe(self) -> str:
        return describe_slo(self.ttft_s, self.tpot_s, self.latency_s, self.percentile)


@dataclass(frozen=True)
class Shape:
    """The vertical part of a replica."""

    instances: int = 1
    max_batch: int = 8


@dataclass(frozen=True)
class Curve:
    """Measured behaviour of one replica shape at increasing per-replica request rates, for one pool size."""

    pool: int
    """Replicas sharing the load when it was measured (more replicas pool their queues better)."""
    rates: tuple[float, ...]
    """Per-replica offered rates, req/s, increasing."""
    met: tuple[float, ...]
    """Share of requests meeting the SLO at each rate."""
    ttft: tuple[tuple[float, ...], ...]
    """TTFT quantiles (at LEVELS) at each rate, seconds."""
    in_flight: tuple[float, ...]
    """Mean requests in a replica (queued or in a batch) at each rate."""

    def rate_at(self, target: float) -> float:
        """The highest rate whose share meets `target` (interpolated at the crossing; 0 if none)."""
        best = 0.0
        for i, share in enumerate(self.met):
            if share < target:
                if i > 0 and self.met[i - 1] >= target:
                    a, b = self.met[i - 1], share
                    best = self.rates[i - 1] + (self.rates[i] - self.rates[i - 1]) * (a - target) / (a - b)
                break
            best = self.rates[i]
        return best


@dataclass(frozen=True)
class Curves:
    """A shape's curves for several pool sizes, under one SLO."""

    shape: Shape
    slo: Slo
    curves: tuple[Curve, ...]
    """Increasing pool sizes."""
    max_rps: float
    """Most requests per second a replica completes (full batches on every instance)."""
    note: str = ""



def _round_up(value: float, digits: int = 4) -> float:
    """`value` rounded up to `digits` significant digits (a memo key that never under-sizes)."""
    if value <= 0:
        return value
    scale = 10 ** (digits - 1 - math.floor(math.log10(value)))
    return math.ceil(value * scale) / scale


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    return float(np.interp(x, xs, ys))


@dataclass(frozen=True)
class CapacityModel:
    """Queries on measured curves; `calibration` multiplies every rate the curves were measured at."""

    curves: Curves
    calibration: float = 1.0
    _memo: dict = field(init=False, default_factory=dict, compare=False, repr=False)
    """Sizing answers already computed (a decision asks the same few questions every tick)."""

    def _remember(self, key: tuple, compute: Callable):
        if key not in self._memo:
            if len(self._memo) > 100_000:
                self._memo.clear()
            self._memo[key] = compute(key[1])
        return self._memo[key]

    @property
    def slo(self) -> Slo:
        return self.curves.slo

    @property
    def shape(self) -> Shape:
        return self.curves.shape

    @property
    def max_rps(self) -> float:
        return self.curves.max_rps * self.calibration

    def for_ttft(self, ttft_s: float) -> "CapacityModel":
        """The same measurements read against another TTFT target (from the stored TTFT quantiles; the share
        is capped at the highest stored level, and the other targets' misses are not re-read)."""
        slo = Slo(ttft_s=ttft_s, tpot_s=self.slo.tpot_s, latency_s=self.slo.latency_s, percentile=self.slo.percentile)
        curves = tuple(
            Curve(c.pool, c.rates, tuple(float(np.interp(ttft_s, q, LEVELS, left=0.0, right=LEVELS[-1])) for q in c.ttft), c.ttft, c.in_flight)
            for c in self.curves.curves
        )
        return CapacityModel(Curves(self.shape, slo, curves, self.curves.max_rps, self.curves.note + f"; read at TTFT {ttft_s:g} s"), self.calibration)

    def _between_pools(self, replicas: float, read: Callable[[Curve], float]) -> float:
        """A reading interpolated in log pool size between the two measured pools around `replicas`."""
        curves = self.curves.curves
        if replicas <= curves[0].pool or len(curves) == 1:
            return read(curves[0])
        for lower, upper in zip(curves, curves[1:]):
            if replicas <= upper.pool:
                a, b = read(lower), read(upper)
                if math.isinf(a) or math.isinf(b):
                    return max(a, b)
                f = (math.log(replicas) - math.log(lower.pool)) / (math.log(upper.pool) - math.log(lower.pool))
                return a + (b - a) * f
        return read(curves[-1])

    def met_share(self, rps: float, extra_wait_s: float = 0.0, replicas: float = 1) -> float:
        """Share of requests meeting the SLO at `rps` per replica over `replicas`, when each also waits
        extra_wait_s (a backlog)."""
        return self._between_pools(replicas, lambda curve: self._met_share(curve, rps, extra_wait_s))

    def _met_share(self, curve: Curve, rps: float, extra_wait_s: float) -> float:
        rate = rps / self.calibration
        if rate > curve.rates[-1] * 1.000001:
            return 0.0
        share = _interp(rate, curve.rates, curve.met)
        if extra_wait_s > 0 and self.slo.ttft_s:
            # Requests whose TTFT is within the SLO minus the extra wait, from the TTFT quantiles at this rate.
            quantiles = [_interp(rate, curve.rates, [q[i] for q in curve.ttft]) for i in range(len(LEVELS))]
            within = float(np.interp(self.slo.ttft_s - extra_wait_s, quantiles, LEVELS, left=0.0, right=LEVELS[-1]))
            base = float(np.interp(self.slo.ttft_s, quantiles, LEVELS, left=0.0, right=LEVELS[-1]))
            share *= within / base if base > 0 else 0.0
        return max(0.0, min(1.0, share))

    def ttft_quantile(self, rps: float, level: float = 0.99, replicas: float = 1) -> float:
        i = LEVELS.index(level) if level in LEVELS else len(LEVELS) - 1
        rate = rps / self.calibration

        def read(curve: Curve) -> float:
            if rate > curve.rates[-1] * 1.000001:
                return math.inf
            return _interp(rate, curve.rates, [q[i] for q in curve.ttft])

        return self._between_pools(replicas, read)

    def in_flight(self, rps: float, replicas: float = 1) -> float:
        """Mean requests in one replica offered `rps` (physics, Little's law: not scaled by the calibration,
        which moves only where the SLO boundary lies)."""
        return self._between_pools(replicas, lambda curve: _interp(rps, curve.rates, curve.in_flight))

    def rps_at_slo(self, replicas: int = 1) -> float:
        """The highest per-replica rate that meets the SLO's percentile with `replicas` sharing the load:
        interpolated between the measured pool sizes (in log size), never falling as the pool grows."""
        return self._remember(("limit", replicas), self._rps_at_slo)

    def _rps_at_slo(self, replicas: int) -> float:
        pools = [c.pool for c in self.curves.curves]
        limits = np.maximum.accumulate([c.rate_at(self.slo.target) for c in self.curves.curves])
        return float(np.interp(math.log(max(1, replicas)), np.log(pools), limits)) * self.calibration

    def replicas_for(self, rps: float) -> int:
        """Fewest replicas whose share of `rps` meets the SLO (at least the throughput bound); 0 for no demand."""
        if not rps > 0:
            return 0
        return self._remember(("rate", _round_up(rps)), self._replicas_for)

    def _replicas_for(self, rps: float) -> int:
        low = max(1, math.ceil(rps / self.max_rps - 1e-9))
        best = self.rps_at_slo(10**9)
        if best <= 0:
            return low  # the SLO is out of reach: at least keep up
        high = max(low, math.ceil(rps / best - 1e-9))

        def enough(n: int) -> bool:
            return rps / n <= self.rps_at_slo(n) + 1e-12

        if not enough(high):
            return high
        while low < high:  # rps / n falls and the pool's limit rises with n: bisect the first n that is enough
            mid = (low + high) // 2
            if enough(mid):
                high = mid
            else:
                low = mid + 1
        return low

    def replicas_for_in_flight(self, in_flight: float) -> int:
        """Fewest replicas n whose share of `in_flight` requests is at most what a replica of a pool of n
        carries at its SLO rate (0 for none). The target grows with the pool, so n is a fixpoint, found by
        bisection; reading the target at the replicas in force instead would recommend fewer replicas the
        more are running."""
        if not in_flight > 0:
            return 0
        return self._remember(("in_flight", _round_up(in_flight)), self._replicas_for_in_flight)

    def _replicas_for_in_flight(self, in_flight: float) -> int:
        def enough(n: int) -> bool:
            return in_flight / n <= self.in_flight_at_slo(n) + 1e-12

        low, high = 1, max(1, math.ceil(in_flight / self.in_flight_at_slo(1) - 1e-9))
        while low < high:
            mid = (low + high) // 2
            if enough(mid):
                high = mid
            else:
                low = mid + 1
        return low

    def in_flight_at_slo(self, replicas: int = 1) -> float:
        """Requests in one replica at its measured SLO rate (the in-flight floor's target). The calibration is
        left out on purpose: a floor read past the curves' last point would stop guarding anything."""
        rate = self.rps_at_slo(replicas) / self.calibration
        return max(1.0, self.in_flight(rate, replicas)) if rate > 0 else 1.0


CALIBRATION_BOUNDS = (0.5, 2.0)
MIN_FINISHED = 200
"""Completions a window needs before its miss share moves the calibration."""


def recalibrate(calibration: float, finished: float, missed: float, target: float, step: float = 0.02) -> float:
    """Online correction of the measured curves from what the fleet achieved over the last window.

    The correction aims at half the SLO's miss budget (1 - target), so that its own wandering stays inside
    the budget. Misses above that mean the curves promised too much per replica: lower the calibration by
    three steps (fast, an SLO is at stake). Misses under a fifth of the budget mean replicas run with room:
    raise it by one step (slow). Too few completions, or misses in between: keep it. Bounded, so one bad
    window cannot run away.
    """
    if finished < MIN_FINISHED:
        return calibration
    budget = 1.0 - target
    share = missed / finished
    if share > budget / 2:
        calibration *= (1 - step) ** 3
    elif share < budget / 5:
        calibration *= 1 + step
    low, high = CALIBRATION_BOUNDS
    return min(high, max(low, calibration))


def choose_shape(
    models: dict[Shape, "CapacityModel"], current: Shape, rps: float, gpus_per_replica: Callable[[Shape], float]
) -> tuple[Shape, str]:
    """The vertical setting that serves `rps` within the SLO for the fewest GPUs (replicas x GPU share), and why.

    A change must cost strictly less than staying, so equal costs (low demand, where every shape needs one
    replica) never flip the shape back and forth; ties between other shapes go to fewer instances, then
    the smaller batch.
    """
    def cost(shape: Shape) -> float:
        return max(1, models[shape].replicas_for(rps)) * gpus_per_replica(shape)

    feasible = [s for s, m in models.items() if m.rps_at_slo(10**9) > 0]
    if not feasible:
        return current, "vertical: no shape meets the SLO; keeping the current one"
    best = min(feasible, key=lambda s: (cost(s), s.instances, s.max_batch))
    here = f"{current.instances}x{current.max_batch}"
    if current in models and cost(current) <= cost(best):
        return current, f"vertical: {here} (instances x batch) is the cheapest at {rps:.2f} rps: {cost(current):g} GPUs"
    was = f", {cost(current):g} as {here}" if current in models else ""
    return best, f"vertical: {best.instances}x{best.max_batch} serves {rps:.2f} rps with {cost(best):g} GPUs{was}"
