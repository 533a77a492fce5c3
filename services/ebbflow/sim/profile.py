"""Measure a replica shape's capacity curve by simulation (the scheduler's capacity model reads it).

Like a pre-deployment profiling run on a GPU, but on the emulator's service
time: a pool of replicas behind the router's least-outstanding rule gets
Poisson arrivals at each rate of a grid, with token counts drawn from the
operator's sample and the fleet's service-time noise; for each rate the
share of requests meeting the SLO, TTFT quantiles and the mean in-flight per
replica are recorded. Pools of 1 to 32 replicas are measured, because more
replicas pool their queues better (at the same per-replica rate, 10
replicas meet a p99.5 TTFT objective that 4 miss). Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

from ebbflow.emulator.service_time import Profile
from ebbflow.scheduler.capacity import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS, LEVELS, CapacityModel, Curve, Curves, Shape, Slo, full_batch_rps
from ebbflow.sim.control import Schedule
from ebbflow.sim.des import Fleet, simulate
from ebbflow.sim.workload import Requests

POOLS = (1, 2, 4, 8, 16, 32)
POINTS = 16
REQUESTS_PER_POINT = 12000
"""About this many requests per measured point (runs between MIN_DURATION_S and MAX_DURATION_S)."""
MIN_DURATION_S = 180.0
MAX_DURATION_S = 7200.0
WARMUP_S = 60.0


def measure_curve(
    profile: Profile,
    shape: Shape,
    slo: Slo,
    prompts: np.ndarray | None = None,
    outputs: np.ndarray | None = None,
    speed_factor: float = 1.0,
    noise_sigma: float = 0.3,
    pools: tuple[int, ...] = POOLS,
    points: int = POINTS,
    seed: int = 0,
    requests_per_point: int = REQUESTS_PER_POINT,
) -> Curves:
    """The shape's curves up to its full-batch throughput, one per pool size (see the module docstring)."""
    p = np.asarray(prompts if prompts is not None and len(prompts) else [DEFAULT_PROMPT_TOKENS], dtype=np.int64)
    o = np.asarray(outputs if outputs is not None and len(outputs) else [DEFAULT_OUTPUT_TOKENS], dtype=np.int64)
    top = full_batch_rps(profile, shape, p, o, speed_factor)
    rng = np.random.default_rng(seed)
    rates = tuple(float(r) for r in top * np.linspace(1 / points, 1.0, points))
    # Durations are in the emulator's time unit: a replica `speed_factor` times faster is measured over as
    # many requests (not `speed_factor` times as many) in a run that much shorter.
    unit_s = 1.0 / speed_factor
    warmup_s = WARMUP_S * unit_s
    curves = []
    for pool in pools:
        fleet = Fleet(profile, shape, speed_factor=speed_factor, noise_sigma=noise_sigma, min_replicas=pool, max_replicas=pool, seed=seed)
        met, ttft, in_flight = [], [], []
        for rate in rates:
            duration_s = min(MAX_DURATION_S * unit_s, max(MIN_DURATION_S * unit_s, warmup_s + requests_per_point / (pool * rate)))
            n = max(1, int(rng.poisson(rate * pool * duration_s)))
            times = np.sort(rng.uniform(0.0, duration_s, n))
            rows = rng.integers(0, len(p), n)
            requests = Requests("profile", times, p[rows], o[rows])
            outcome = simulate(requests, fleet, Schedule("profile", np.array([pool]), duration_s), span_s=duration_s, initial=pool)
            scored = times >= warmup_s  # the pool starts empty: skip the first (emulated) minute
            ok = slo.met(outcome.ttft_s, outcome.tpot_s, outcome.latency_s)[scored]
            met.append(float(ok.mean()) if len(ok) else 1.0)
            values = np.nan_to_num(outcome.ttft_s[scored], nan=np.inf)
            ttft.append(tuple(float(np.quantile(values, q)) if len(values) else 0.0 for q in LEVELS))
            in_flight.append(float(outcome.extra["in_flight_area"] / duration_s / pool))
            if met[-1] < 0.5:  # far past the SLO: the rest of the grid cannot meet it either
                break
        # Measurement noise must not make the share rise with load: keep it non-increasing.
        met = list(np.minimum.accumulate(met))
        k = len(met)
        curves.append(Curve(pool, rates[:k], tuple(met), tuple(ttft), tuple(in_flight)))
    return Curves(shape, slo, tuple(curves), top, f"measured by simulation: pools {pools}, ~{requests_per_point} requests per point, seed {seed}")


def capacity_model(profile: Profile, shape: Shape, slo: Slo, prompts=None, outputs=None, speed_factor: float = 1.0, noise_sigma: float = 0.3, seed: int = 0) -> CapacityModel:
    return CapacityModel(measure_curve(profile, shape, slo, prompts, outputs, speed_factor, noise_sigma, seed=seed))


def best_shape(
    profile: Profile, shapes: list[Shape], slo: Slo, rps: float, prompts=None, outputs=None, noise_sigma: float = 0.3
) -> tuple[Shape, int, dict[Shape, int]]:
    """The vertical setting that meets the SLO at `rps` with the fewest replicas (one GPU each); ties go to
    fewer instances, then the smaller batch. A quick measurement (one pool of 8, 10 rates) per shape; also
    returns each feasible shape's replica count."""
    counts: dict[Shape, int] = {}
    for shape in shapes:
        curves = measure_curve(profile, shape, slo, prompts, outputs, noise_sigma=noise_sigma, pools=(8,), points=10, requests_per_point=3000)
        model = CapacityModel(curves)
        if model.rps_at_slo(8) > 0:
            counts[shape] = model.replicas_for(max(rps, 1e-9))
    if not counts:
        raise ValueError(f"no shape meets the SLO {slo.describe()} even at the lowest measured rate")
    chosen = min(counts, key=lambda s: (counts[s], s.instances, s.max_batch))
    return chosen, counts[chosen], counts


def default_shapes(max_instances: int = 4, batches: tuple[int, ...] = (1, 2, 4, 8, 16)) -> list[Shape]:
    return [Shape(n, b) for n in range(1, max_instances + 1) for b in batches]

