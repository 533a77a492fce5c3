"""Capacity model: how many replicas a request rate needs to meet a latency objective.

A replica runs `instances` model instances on one GPU; each instance serves
one batch at a time (a Triton batch: prefilled together, decoded in lock-step
until its longest request is done), taking whatever is queued up to
`max_batch`. Batch service times come from the emulator's `service_time`
(the same function the Triton model runs), over batches drawn from a sample
of (prompt, output) token counts, so heavy-tailed outputs make long batches
as they do in the fleet.

Queueing is M/G/c per replica (Erlang C with the Allen-Cunneen correction
for service-time variability), where a server is an instance and a customer
is a batch. Dynamic batching picks the batch size, so the model takes the
batch size in 1..max_batch that gives the lowest latency at that rate. The
p-quantile of the wait uses the exponential tail of M/M/c's conditional
wait; adding the service quantile to it is conservative.

Pure and deterministic for a seed: the scheduler and the simulator build it
from the same profile and token sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

from ebbflow.emulator.service_time import Profile

DEFAULT_PROMPT_TOKENS = 1024
DEFAULT_OUTPUT_TOKENS = 128


@dataclass(frozen=True)
class Slo:
    """Latency objective at a percentile; a target of 0 is not checked."""

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

    def met(self, ttft_s: float, tpot_s: float, latency_s: float) -> bool:
        return (
            (not self.ttft_s or ttft_s <= self.ttft_s)
            and (not self.tpot_s or tpot_s <= self.tpot_s)
            and (not self.latency_s or latency_s <= self.latency_s)
        )

    def describe(self) -> str:
        parts = [f"{name} <= {value:g} s" for name, value in (("TTFT", self.ttft_s), ("TPOT", self.tpot_s), ("latency", self.latency_s)) if value]
        return f"p{self.percentile:g} " + ", ".join(parts)


@dataclass(frozen=True)
class Shape:
    """The vertical part of a replica."""

    instances: int = 1
    max_batch: int = 8


@dataclass(frozen=True)
class Estimate:
    """Predicted latency quantiles at one per-replica rate (inf when the replica cannot keep up)."""

    batch: int
    utilization: float
    wait_s: float
    ttft_s: float
    tpot_s: float
    latency_s: float


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c with `offered` = arrival rate x mean service time."""
    if offered <= 0:
        return 0.0
    if offered >= servers:
        return 1.0
    term, total = 1.0, 1.0
    for k in range(1, servers):
        term *= offered / k
        total += term
    last = term * offered / servers / (1 - offered / servers)
    return last / (total + last)


@dataclass(frozen=True)
class BatchTimes:
    """Per batch size b = 1..max_batch: mean and quantile of service, TTFT part and TPOT (one instance alone)."""

    mean_s: tuple[float, ...]
    scv: tuple[float, ...]
    quantile_s: tuple[float, ...]
    ttft_quantile_s: tuple[float, ...]
    tpot_quantile_s: tuple[float, ...]


def batch_times(profile: Profile, prompts: np.ndarray, outputs: np.ndarray, max_batch: int, percentile: float, draws: int = 4000, seed: int = 0) -> BatchTimes:
    """Monte-Carlo batch service times from the profile over batches drawn from the token sample (vectorised
    copy of emulator.service_time.service_time at one instance; a test checks they agree)."""
    rng = np.random.default_rng(seed)
    q = percentile / 100
    means, scvs, quants, ttfts, tpots = [], [], [], [], []
    for b in range(1, max_batch + 1):
        rows = rng.integers(0, len(prompts), size=(draws, b))
        prefill = profile.prefill_base_s + profile.prefill_s_per_token * np.maximum(prompts[rows], 0).sum(axis=1)
        step = profile.decode_step_base_s + profile.decode_step_s_per_extra_sequence * (b - 1)
        steps = np.maximum(outputs[rows].max(axis=1), 0)
        total = prefill + steps * step
        ttft = prefill + np.where(steps > 0, step, 0.0)
        mean = float(total.mean())
        means.append(mean)
        scvs.append(float(total.var() / mean**2) if mean > 0 else 0.0)
        quants.append(float(np.quantile(total, q)))
        ttfts.append(float(np.quantile(ttft, q)))
        tpots.append(step)
    return BatchTimes(tuple(means), tuple(scvs), tuple(quants), tuple(ttfts), tuple(tpots))


@dataclass(frozen=True)
class CapacityModel:
    """Latency of one replica shape as a function of its request rate, and the replicas a rate needs."""

    profile: Profile
    shape: Shape
    slo: Slo
    times: BatchTimes
    speed_factor: float = 1.0
    calibration: float = 1.0
    """Multiplies the SLO rate the formula gives: the correction learned from observed latency (the formula
    is conservative at high percentiles, where it adds the wait's and the service's quantiles)."""
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        profile: Profile,
        shape: Shape,
        slo: Slo,
        prompts: Sequence[float] | None = None,
        outputs: Sequence[float] | None = None,
        speed_factor: float = 1.0,
        seed: int = 0,
    ) -> "CapacityModel":
        """From a token sample (e.g. the last hour's requests); without one, fixed defaults."""
        p = np.asarray(prompts if prompts is not None and len(prompts) else [DEFAULT_PROMPT_TOKENS], dtype=float)
        o = np.asarray(outputs if outputs is not None and len(outputs) else [DEFAULT_OUTPUT_TOKENS], dtype=float)
        return cls(profile, shape, slo, batch_times(profile, p, o, shape.max_batch, slo.percentile, seed=seed), speed_factor)

    @property
    def slowdown(self) -> float:
        """Each of n instances sharing the GPU runs at scaling(n)/n of full speed."""
        n = self.shape.instances
        return n / self.profile.throughput_scaling(n) / self.speed_factor

    @property
    def max_rps(self) -> float:
        """Most requests per second one replica completes (full batches on every instance)."""
        n, s = self.shape.instances, self.slowdown
        return max(n * b / (mean * s) for b, mean in enumerate(self.times.mean_s, start=1))

    def estimate(self, rps: float) -> Estimate:
        """Latency quantiles (at the SLO's percentile) of one replica offered `rps`, at its best batch size."""
        key = round(rps, 6)
        if key in self._cache:
            return self._cache[key]
        n, s, p = self.shape.instances, self.slowdown, self.slo.percentile / 100
        best = Estimate(self.shape.max_batch, math.inf, math.inf, math.inf, math.inf, math.inf)
        for b in range(1, self.shape.max_batch + 1):
            mean = self.times.mean_s[b - 1] * s
            offered = rps / b * mean  # batches per second x batch time
            if offered >= n:
                continue
            waits = erlang_c(n, offered)
            # Allen-Cunneen: M/G/c wait ~ M/M/c wait x (ca^2 + cs^2) / 2, Poisson batches (ca^2 = 1).
            mean_wait = waits * mean / (n - offered) * (1 + self.times.scv[b - 1]) / 2
            wait = mean_wait / waits * math.log(waits / (1 - p)) if waits > 1 - p else 0.0
            estimate = Estimate(
                b,
                offered / n,
                wait,
                wait + self.times.ttft_quantile_s[b - 1] * s,
                self.times.tpot_quantile_s[b - 1] * s,
                wait + self.times.quantile_s[b - 1] * s,
            )
            if self._score(estimate) < self._score(best):
                best = estimate
        if len(self._cache) < 100_000:
            self._cache[key] = best
        return best

    def _score(self, e: Estimate) -> float:
        """How far over its SLO an estimate is at worst (<= 1 means met)."""
        ratios = [value / target for value, target in ((e.ttft_s, self.slo.ttft_s), (e.tpot_s, self.slo.tpot_s), (e.latency_s, self.slo.latency_s)) if target]
        return max(ratios)

    def met_share(self, rps: float, extra_wait_s: float = 0.0) -> float:
        """Share of requests meeting the SLO at `rps` per replica when every request also waits extra_wait_s
        (a backlog): the M/G/c wait's exponential tail against the time the SLO leaves after service."""
        e = self.estimate(rps)
        if math.isinf(e.utilization):
            return 0.0
        n, s = self.shape.instances, self.slowdown
        b = e.batch
        if self.slo.tpot_s and e.tpot_s > self.slo.tpot_s:
            return 0.0
        mean = self.times.mean_s[b - 1] * s
        offered = rps / b * mean
        waits = erlang_c(n, offered)
        mean_wait = waits * mean / (n - offered) * (1 + self.times.scv[b - 1]) / 2
        slack = min(
            target - service
            for target, service in ((self.slo.ttft_s, self.times.ttft_quantile_s[b - 1] * s), (self.slo.latency_s, self.times.quantile_s[b - 1] * s))
            if target
        ) if (self.slo.ttft_s or self.slo.latency_s) else math.inf
        slack -= extra_wait_s
        if slack < 0:
            return 0.0
        if waits <= 0 or mean_wait <= 0:
            return 1.0
        return 1.0 - waits * math.exp(-slack * waits / mean_wait)

    def meets(self, rps: float) -> bool:
        return self._score(self.estimate(rps)) <= 1.0

    def rps_at_slo(self) -> float:
        """The highest per-replica rate that still meets the SLO (0 when even an idle replica misses it), calibrated."""
        return min(self.max_rps, _rate_at_slo(self) * self.calibration)

    def replicas_for(self, rps: float) -> int:
        """Fewest replicas whose share of `rps` meets the SLO (at least the throughput bound); 0 for no demand."""
        if not rps > 0:
            return 0
        limit = self.rps_at_slo()
        if limit <= 0:
            return math.ceil(rps / self.max_rps)  # the SLO is out of reach: at least keep up
        return math.ceil(rps / limit - 1e-9)

    def in_flight_at_slo(self) -> float:
        """Requests in a replica at its SLO rate (Little's law with the mean time in system)."""
        rate = self.rps_at_slo()
        if rate <= 0:
            return 1.0
        e = self.estimate(rate)
        mean_service = self.times.mean_s[e.batch - 1] * self.slowdown
        return max(1.0, rate * (mean_service + e.wait_s / 2))


def _rate_at_slo(model: CapacityModel) -> float:
    key = ("rate_at_slo",)
    if key in model._cache:
        return model._cache[key]
    if not model.meets(1e-9):
        model._cache[key] = 0.0
        return 0.0
    low, high = 0.0, model.max_rps
    for _ in range(50):  # latency rises with the rate: bisect the boundary
        mid = (low + high) / 2
        if model.meets(mid):
            low = mid
        else:
            high = mid
    model._cache[key] = low
    return low


def best_shape(
    profile: Profile,
    shapes: Sequence[Shape],
    slo: Slo,
    rps: float,
    prompts: Sequence[float] | None = None,
    outputs: Sequence[float] | None = None,
) -> tuple[Shape, int]:
    """The vertical setting that meets the SLO at `rps` with the fewest replicas (one GPU each);
    ties go to fewer instances, then the smaller batch."""
    best: tuple[int, int, int, Shape] | None = None
    for shape in shapes:
        model = CapacityModel.build(profile, shape, slo, prompts, outputs)
        if model.rps_at_slo() <= 0:
            continue
        key = (model.replicas_for(max(rps, 1e-9)), shape.instances, shape.max_batch, shape)
        if best is None or key[:3] < best[:3]:
            best = key
    if best is None:
        raise ValueError(f"no shape meets the SLO {slo.describe()} even when idle")
    return best[3], best[0]


@lru_cache(maxsize=None)
def default_shapes(max_instances: int = 4, max_batch: int = 16) -> tuple[Shape, ...]:
    batches = [b for b in (1, 2, 4, 8, 16, 32) if b <= max_batch]
    return tuple(Shape(n, b) for n in range(1, max_instances + 1) for b in batches)
