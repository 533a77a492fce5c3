"""An emulated pool of LLM replicas, request by request: the fleet's physics as a discrete-event run.

The physics are the fleet's own:
- a replica is started by a decision, becomes ready `cold_s` later and
  costs GPU time from the start command until it exits (docs/architecture.md's
  GPU-hours), cold start and drain included;
- the router sends each request to the ready replica with the fewest
  outstanding requests, rotating ties (router.core.pick_replica's
  least-outstanding rule; a test checks they pick alike); with no ready
  replica the request is held and released in order when one becomes ready;
- a replica runs `instances` model instances; an idle instance takes up to
  `max_batch` queued requests as one batch (Triton's dynamic batcher), whose
  service time is emulator.service_time.service_time (the function the
  Triton model runs) times a heavy-tailed noise factor (lognormal, mean 1);
- scaling down cancels starting replicas first (newest first), then drains
  the ready replica with the fewest outstanding: it takes no new requests,
  finishes its queue and exits.

Who decides the replica count is the caller's: `run_pool` asks a `decide`
function every `period_s`. The simulator (ebbflow.sim.des) passes its
autoscaling policies there; the scheduler's capacity measurement
(ebbflow.scheduler.measure) a fixed pool. Both run this one loop, so the
curves the scheduler sizes on and the fleet the simulator replays cannot
drift apart. The per-second `Telemetry` a run fills is what the simulator's
controllers observe. Pure: simulated time only, deterministic for a seed.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ebbflow.emulator.service_time import Profile, service_time

STARTING, READY, DRAINING, STOPPED = range(4)
DRAIN_S = 600.0
"""How long past the span a run goes on, so the last requests finish."""


@dataclass(frozen=True)
class Pool:
    """Replicas of one shape on one kind of GPU, as the run emulates them."""

    profile: Profile
    instances: int = 1
    """Model instances per replica."""
    max_batch: int = 8
    """Largest batch an instance takes."""
    speed_factor: float = 1.0
    """True speed relative to the profile."""
    noise_sigma: float = 0.3
    """Sigma of the lognormal factor on each batch's service time (mean 1)."""
    cold_s: float = 0.0
    """Start command to ready, seconds."""
    seed: int = 0


@dataclass
class Telemetry:
    """Per-step (by default per-second) arrivals, in-flight area (the time integral of requests in the system,
    held ones included), and completions meeting or missing the SLO, as the router measures them; filled as a
    run goes. The simulator's controllers read it (ebbflow.sim.control.Observation)."""

    arrivals: np.ndarray
    in_flight_area: np.ndarray
    step_s: float = 1.0
    finished: np.ndarray | None = None
    missed: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.finished is None:
            self.finished = np.zeros_like(self.arrivals)
        if self.missed is None:
            self.missed = np.zeros_like(self.arrivals)

    @classmethod
    def empty(cls, span_s: float, step_s: float = 1.0) -> "Telemetry":
        n = int(math.ceil(span_s / step_s)) + 2
        return cls(np.zeros(n), np.zeros(n), step_s)


Decide = Callable[[float, Telemetry, int, int], int]
"""(now_s, telemetry so far, ready replicas, replicas starting or ready) -> the replicas wanted."""


def fixed_size(replicas: int) -> Decide:
    """A `decide` that always wants `replicas` (a pool measured at one size)."""
    return lambda now_s, telemetry, ready, current: replicas


@dataclass
class PoolRun:
    """What a run did: per request, per second, and in total."""

    ttft_s: list[float]
    tpot_s: list[float]
    latency_s: list[float]
    """Per request; NaN for one unfinished when the run ended."""
    gpu_s: float
    replicas: np.ndarray
    """Replicas holding a GPU (starting, ready or draining), sampled each second."""
    ready: np.ndarray
    actions: int
    """Decisions that changed the replica count."""
    cold_starts: int
    telemetry: Telemetry


def least_outstanding(outstanding: list[int], draw: int) -> int:
    """router.core.pick_replica's least-outstanding rule on replicas in key order: the fewest outstanding,
    ties rotating with `draw`; the index of the pick."""
    fewest = min(outstanding)
    tied = [i for i, n in enumerate(outstanding) if n == fewest]
    return tied[draw % len(tied)]


class _Replica:
    __slots__ = ("key", "state", "started_s", "queue", "free", "outstanding")

    def __init__(self, key: int, now_s: float, instances: int) -> None:
        self.key = key
        self.state = STARTING
        self.started_s = now_s
        self.queue: deque[int] = deque()
        self.free = instances
        self.outstanding = 0


def run_pool(
    pool: Pool,
    arrivals_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    decide: Decide,
    period_s: float,
    initial: int,
    span_s: float | None = None,
    warmup_s: float = 0.0,
    slo_limits: tuple[float, float, float] | None = None,
) -> PoolRun:
    """Serve requests arriving at `arrivals_s` (seconds from 0, sorted) with these token counts: `initial`
    replicas are ready at 0, `decide` is first asked at warmup_s and then every period_s until span_s (default:
    the last arrival). With `slo_limits` (TTFT, TPOT, latency; inf where unset), completions meeting and
    missing them are part of the telemetry."""
    profile = pool.profile
    times = arrivals_s.tolist()
    prompts = prompt_tokens.tolist()
    outputs = output_tokens.tolist()
    n = len(times)
    span = span_s if span_s is not None else (times[-1] if n else 0.0)
    end_s = span + DRAIN_S  # let the last requests finish
    record = Telemetry.empty(end_s)
    arrivals, area = record.arrivals, record.in_flight_area
    finished, missed = record.finished, record.missed
    ttft_limit, tpot_limit, latency_limit = slo_limits if slo_limits is not None else (math.inf,) * 3
    ttft = [math.nan] * n
    tpot = [math.nan] * n
    latency = [math.nan] * n
    rng = np.random.default_rng(pool.seed)
    sigma = pool.noise_sigma
    noise = (rng.lognormal(-sigma * sigma / 2, sigma, size=max(16, n)) if sigma > 0 else np.ones(max(16, n))).tolist()
    noise_i = 0

    replicas: list[_Replica] = []
    routable: list[_Replica] = []  # ready, in key order
    held: deque[int] = deque()
    events: list = []  # (time, seq, kind, replica, batch)
    seq = 0
    gpu_s = 0.0
    cold_starts = actions = 0
    samples_total = np.zeros(int(math.ceil(end_s)) + 2)
    samples_ready = np.zeros_like(samples_total)
    next_sample = 0
    in_system = 0
    alive = 0  # replicas holding a GPU
    draining = 0
    last_t = 0.0
    draw = 0
    max_batch, instances, cold_s = pool.max_batch, pool.instances, pool.cold_s

    def advance(t: float) -> None:
        nonlocal last_t, next_sample
        # in-flight area per second, split at second boundaries
        while last_t < t:
            boundary = math.floor(last_t) + 1.0
            upto = min(t, boundary)
            area[int(last_t)] += in_system * (upto - last_t)
            last_t = upto
        while next_sample <= t and next_sample < len(samples_total):
            samples_total[next_sample] = alive
            samples_ready[next_sample] = len(routable)
            next_sample += 1

    def start_batches(r: _Replica, now: float) -> None:
        nonlocal seq, noise_i
        while r.free and r.queue:
            batch = [r.queue.popleft() for _ in range(min(max_batch, len(r.queue)))]
            st = service_time([prompts[i] for i in batch], [outputs[i] for i in batch], profile, instances, pool.speed_factor)
            factor = noise[noise_i % len(noise)]
            noise_i += 1
            for i in batch:
                ttft[i] = now - times[i] + st.ttft_s * factor
                tpot[i] = st.tpot_s * factor
            r.free -= 1
            seq += 1
            heapq.heappush(events, (now + st.total_s * factor, seq, 0, r, batch))

    def route(i: int, now: float) -> None:
        nonlocal draw
        if not routable:
            held.append(i)
            return
        r = routable[least_outstanding([r.outstanding for r in routable], draw)]
        draw += 1
        r.outstanding += 1
        r.queue.append(i)
        start_batches(r, now)

    def stop(r: _Replica, now: float) -> None:
        nonlocal gpu_s, alive, draining
        alive -= 1
        draining -= r.state == DRAINING
        r.state = STOPPED
        gpu_s += now - r.started_s

    def scale_to(desired: int, now: float) -> None:
        nonlocal seq, cold_starts, alive, draining
        wanted = [r for r in replicas if r.state in (STARTING, READY)]
        if desired > len(wanted):
            for _ in range(desired - len(wanted)):
                r = _Replica(len(replicas), now, instances)
                replicas.append(r)
                alive += 1
                cold_starts += 1
                seq += 1
                heapq.heappush(events, (now + cold_s, seq, 1, r, None))
        elif desired < len(wanted):
            surplus = len(wanted) - desired
            for r in sorted((r for r in wanted if r.state == STARTING), key=lambda r: -r.started_s)[:surplus]:
                stop(r, now)
                surplus -= 1
            for r in sorted((r for r in wanted if r.state == READY), key=lambda r: (r.outstanding, -r.key))[:surplus]:
                r.state = DRAINING
                draining += 1
                routable.remove(r)
                if r.outstanding == 0:
                    stop(r, now)

    for _ in range(initial):  # replicas in force when the trace begins: already ready, GPU time from 0
        r = _Replica(len(replicas), 0.0, instances)
        r.state = READY
        replicas.append(r)
        routable.append(r)
        alive += 1
    next_tick = warmup_s
    i = 0
    last_desired = initial
    while True:
        t_arrival = times[i] if i < n else math.inf
        t_event = events[0][0] if events else math.inf
        t_tick = next_tick if next_tick <= span else math.inf
        now = min(t_arrival, t_event, t_tick)
        if now == math.inf or now > end_s:
            break
        advance(now)
        if t_event == now:
            _, _, kind, r, batch = heapq.heappop(events)
            if kind == 0:  # batch done
                second = int(now)
                for j in batch:
                    latency[j] = now - times[j]
                    if slo_limits is not None:
                        finished[second] += 1
                        missed[second] += ttft[j] > ttft_limit or tpot[j] > tpot_limit or latency[j] > latency_limit
                k = len(batch)
                r.outstanding -= k
                in_system -= k
                r.free += 1
                start_batches(r, now)
                if r.state == DRAINING and r.outstanding == 0:
                    stop(r, now)
            elif r.state == STARTING:  # ready
                r.state = READY
                routable.append(r)
                routable.sort(key=lambda x: x.key)
                while held:
                    route(held.popleft(), now)
        elif t_arrival == now:
            arrivals[int(now)] += 1
            in_system += 1
            route(i, now)
            i += 1
        else:
            current = alive - draining
            desired = decide(now, record, len(routable), current)
            if desired != current:
                scale_to(desired, now)
            if desired != last_desired:
                actions += 1
                last_desired = desired
            next_tick = now + period_s
        if i >= n and not events and next_tick > span:
            break
    final = min(end_s, max(now if now != math.inf else span, span))  # past end_s, what is left counts as unfinished
    advance(final)
    for r in replicas:
        if r.state != STOPPED:
            stop(r, final)
    used = int(math.ceil(final)) + 1
    return PoolRun(ttft, tpot, latency, gpu_s, samples_total[:used], samples_ready[:used], actions, cold_starts, record)
