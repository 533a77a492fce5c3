"""Fluid simulation: arrival counts per bin, queues and latency from the capacity model.

For multi-day traces (ServeGen's 14 days) where per-request events are too
many. Per bin of width w: replicas started at least `cold_start_s` ago serve
(pro rata for a part of the bin); the bin's arrivals join the backlog; a
replica completes at most its full-batch throughput (the capacity model's
max_rps, at the fleet's true speed); what is not served waits for the next
bin. The share of a bin's requests meeting the SLO is the measured capacity
curve's at the per-replica rate of the last minute, after the backlog's wait; its TTFT is
the curve's p99 plus that wait (so fluid percentiles are of per-bin p99s). A
drained replica holds its GPU one more bin (its last batches). The
controllers are the same objects the discrete-event mode runs, asked at
their period rounded to whole bins, over the same kind of telemetry.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ebbflow.emulator.pool import Telemetry
from ebbflow.scheduler.capacity import CapacityModel
from ebbflow.sim.control import Controller, Observation
from ebbflow.sim.des import Fleet, Outcome
from ebbflow.sim.workload import Counts

SMOOTH_S = 60.0
"""Window of the arrival rate the capacity curves are read at, seconds."""


def simulate_fluid(
    counts: Counts, fleet: Fleet, truth: CapacityModel, controller: Controller, initial: int | None = None, warmup_s: float = 0.0
) -> Outcome:
    """Replay per-bin arrival counts (NaN = gap: no arrivals, not scored) against `fleet` under `controller`,
    first asked at warmup_s."""
    w = counts.step_s
    bins = len(counts.counts)
    arrivals = np.nan_to_num(counts.counts)
    scored = ~np.isnan(counts.counts)
    telemetry = Telemetry(np.zeros(bins + 2), np.zeros(bins + 2), w)
    every = max(1, int(round(controller.period_s / w)))
    mu = truth.max_rps
    cold = fleet.cold_s
    start = fleet.min_replicas if initial is None else initial
    ready_count = float(start)  # replicas ready since before this bin
    starting: deque[list[float]] = deque()  # [start time, replicas] of replicas still starting, oldest first
    backlog = 0.0
    gpu_s = 0.0
    actions = cold_starts = 0
    last_desired = start
    met = np.zeros(bins)
    ttft = np.zeros(bins)
    replicas = np.zeros(bins)
    ready_series = np.zeros(bins)
    draining = 0.0
    recent: deque[float] = deque(maxlen=max(1, int(round(SMOOTH_S / w))))
    for k in range(bins):
        t0 = k * w
        while starting and starting[0][0] + cold <= t0:
            ready_count += starting.popleft()[1]
        alive = ready_count + sum(c[1] for c in starting)
        if k % every == 0 and t0 >= warmup_s:
            obs = Observation(t0, telemetry, int(ready_count), int(round(alive)))
            desired = min(fleet.max_replicas, max(fleet.min_replicas, int(controller.decide(obs))))
            if desired != last_desired:
                actions += 1
                last_desired = desired
            if desired > alive:
                starting.append([t0, desired - alive])
                cold_starts += int(round(desired - alive))
            elif desired < alive:
                surplus = alive - desired
                while surplus > 0 and starting:  # cancel the newest starts first
                    take = min(surplus, starting[-1][1])
                    starting[-1][1] -= take
                    surplus -= take
                    if starting[-1][1] <= 0:
                        starting.pop()
                take = min(surplus, ready_count)
                ready_count -= take
                draining += take  # drained replicas hold their GPU for this bin (their last batches)
            alive = ready_count + sum(c[1] for c in starting)
        # Capacity in this bin: replicas becoming ready count pro rata for the part of the bin they are ready.
        ready = ready_count + sum(c[1] * min(1.0, max(0.0, (t0 + w - (c[0] + cold)) / w)) for c in starting)
        gpu_s += (alive + draining) * w
        replicas[k] = alive + draining
        ready_series[k] = ready
        draining = 0.0
        a = arrivals[k]
        recent.append(a)
        if ready > 0:
            # The curves were measured under Poisson arrivals at a steady rate, so they already hold the
            # second-to-second jitter: read them at the smoothed rate; burstier bins show up as backlog.
            rate = min(sum(recent) / (len(recent) * w) / ready, mu)
            wait = backlog / (ready * mu)
            served = min(backlog + a, ready * mu * w)
            pool = max(1.0, ready)
            met[k] = truth.met_share(rate, wait, pool)
            ttft[k] = truth.ttft_quantile(rate, 0.99, pool) + wait
            in_flight = truth.in_flight(min(a / w / ready, mu), pool) * ready  # what the routers see this bin
        else:
            served, met[k], ttft[k], in_flight = 0.0, 0.0, math.inf, 0.0
        backlog = backlog + a - served
        telemetry.arrivals[k] = a
        telemetry.in_flight_area[k] = (in_flight + backlog) * w
        telemetry.finished[k] = served
        telemetry.missed[k] = served * (1.0 - met[k])
    return Outcome(
        controller.name,
        ttft,
        np.zeros(bins),  # TPOT is inside the measured share; the fluid mode has no per-request TPOT
        ttft,
        scored,
        gpu_s,
        replicas,
        ready_series,
        actions,
        cold_starts,
        weights=arrivals,
        extra={"met_share": met, "backlog_at_end": backlog},
    )
