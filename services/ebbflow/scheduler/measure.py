"""Measure a replica shape's capacity curves by simulation (the capacity model, scheduler.capacity, reads them).

Like a pre-deployment profiling run on a GPU, but on the emulator's service
time: a pool of replicas behind the router's least-outstanding rule
(ebbflow.emulator.pool, the loop the simulator replays fleets on) gets
Poisson arrivals at each rate of a grid, with token counts drawn from the
operator's sample and the fleet's service-time noise; for each rate the
share of requests meeting the SLO, TTFT quantiles and the mean in-flight per
replica are recorded. Pools of 1 to 32 replicas are measured, because more
replicas pool their queues better (at the same per-replica rate, 10
replicas meet a p99.5 TTFT objective that 4 miss). The grid goes up to the
shape's full-batch throughput, from the emulator's vectorised service time.
Deterministic for a seed. Pure: simulated time only (seconds of CPU, so the
live scheduler runs it in a child process: scheduler.curves).
"""

from __future__ import annotations

import numpy as np

from ebbflow.emulator.pool import Pool, fixed_size, run_pool
from ebbflow.emulator.service_time import Profile, service_times
from ebbflow.scheduler.capacity import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS, LEVELS, Curve, Curves, Shape, Slo

POOLS = (1, 2, 4, 8, 16, 32)
POINTS = 16
REQUESTS_PER_POINT = 12000
"""About this many requests per measured point (runs between MIN_DURATION_S and MAX_DURATION_S)."""
MIN_DURATION_S = 180.0
MAX_DURATION_S = 7200.0
WARMUP_S = 60.0
PERIOD_S = 1.0
"""How often the fixed pool is asked for its size (as the simulator's fixed schedules are)."""


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
        replicas = Pool(profile, shape.instances, shape.max_batch, speed_factor, noise_sigma, profile.model_load_s, seed)
        met, ttft, in_flight = [], [], []
        for rate in rates:
            duration_s = min(MAX_DURATION_S * unit_s, max(MIN_DURATION_S * unit_s, warmup_s + requests_per_point / (pool * rate)))
            n = max(1, int(rng.poisson(rate * pool * duration_s)))
            times = np.sort(rng.uniform(0.0, duration_s, n))
            rows = rng.integers(0, len(p), n)
            run = run_pool(replicas, times, p[rows], o[rows], fixed_size(pool), PERIOD_S, pool, span_s=duration_s)
            ttft_s = np.asarray(run.ttft_s)
            scored = times >= warmup_s  # the pool starts empty: skip the first (emulated) minute
            ok = slo.met(ttft_s, np.asarray(run.tpot_s), np.asarray(run.latency_s))[scored]
            met.append(float(ok.mean()) if len(ok) else 1.0)
            values = np.nan_to_num(ttft_s[scored], nan=np.inf)
            ttft.append(tuple(float(np.quantile(values, q)) if len(values) else 0.0 for q in LEVELS))
            in_flight.append(float(run.telemetry.in_flight_area.sum()) / duration_s / pool)
            if met[-1] < 0.5:  # far past the SLO: the rest of the grid cannot meet it either
                break
        # Measurement noise must not make the share rise with load: keep it non-increasing.
        met = list(np.minimum.accumulate(met))
        k = len(met)
        curves.append(Curve(pool, rates[:k], tuple(met), tuple(ttft), tuple(in_flight)))
    return Curves(shape, slo, tuple(curves), top, f"measured by simulation: pools {pools}, ~{requests_per_point} requests per point, seed {seed}")


def batch_mean_s(profile: Profile, prompts: np.ndarray, outputs: np.ndarray, batch: int, draws: int = 4000, seed: int = 0) -> float:
    """Mean service time of a full batch at one instance alone, over `draws` batches drawn from the token sample."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(prompts), size=(draws, batch))
    return float(service_times(prompts[rows], outputs[rows], profile).total_s.mean())


def full_batch_rps(profile: Profile, shape: Shape, prompts: np.ndarray, outputs: np.ndarray, speed_factor: float = 1.0) -> float:
    """Requests per second a replica completes with every instance running full batches: one instance alone's
    full batches, times the replica's relative throughput (the profile's instance scaling, which is what
    service_time's slowdown of n instances amounts to, and the GPU's speed). Scaled here, not by timing the
    batches at n instances, so the figure stays the one the curves were always measured from, to the bit."""
    n = shape.instances
    return profile.throughput_scaling(n) * speed_factor * shape.max_batch / batch_mean_s(profile, prompts, outputs, shape.max_batch)
