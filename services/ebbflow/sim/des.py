"""Per-request discrete-event simulation of one model's fleet.

The physics are the fleet's own:
- a replica is started by a decision, becomes ready `cold_start_s` later and
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
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ebbflow.emulator.service_time import Profile, service_time
from ebbflow.scheduler.capacity import Shape, Slo
from ebbflow.sim.control import Controller, Observation, Telemetry
from ebbflow.sim.workload import Requests

STARTING, READY, DRAINING, STOPPED = range(4)


@dataclass(frozen=True)
class Fleet:
    """The simulated hardware and its physics (shared by every policy in a comparison)."""

    profile: Profile
    shape: Shape = Shape()
    cold_start_s: float = -1.0
    """Start command to ready, seconds; < 0: the profile's model_load_s."""
    speed_factor: float = 1.0
    """True speed relative to the profile (1/1.15: the sensitivity run's 15 % slower GPUs)."""
    noise_sigma: float = 0.3
    """Sigma of the lognormal factor on each batch's service time (mean 1)."""
    min_replicas: int = 0
    max_replicas: int = 200
    seed: int = 0

    @property
    def cold_s(self) -> float:
        return self.profile.model_load_s if self.cold_start_s < 0 else self.cold_start_s


@dataclass
class Outcome:
    """What one policy did on one trace."""

    policy: str
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    latency_s: np.ndarray
    scored: np.ndarray
    """Which requests count (all, in the discrete-event mode)."""
    gpu_s: float
    replicas: np.ndarray
    """Replicas holding a GPU (starting, ready or draining), sampled each second."""
    ready: np.ndarray
    actions: int
    """Decisions that changed the replica count."""
    cold_starts: int
    weights: np.ndarray | None = None
    """Requests each entry stands for (fluid mode: one entry per bin)."""
    extra: dict = field(default_factory=dict)

    def met(self, slo: Slo) -> np.ndarray:
        """Per entry, the share meeting the SLO (a request: 0 or 1; a fluid bin: its share)."""
        if self.weights is not None:
            return self.extra["met_share"]
        return slo.met(self.ttft_s, self.tpot_s, self.latency_s).astype(float)

    def attainment(self, slo: Slo) -> float:
        """Share of scored requests meeting the SLO."""
        met = self.met(slo)
        w = self.weights if self.weights is not None else np.ones(len(met))
        total = float(w[self.scored].sum())
        return float((met * w)[self.scored].sum() / total) if total else math.nan


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


def simulate(
    requests: Requests,
    fleet: Fleet,
    controller: Controller,
    span_s: float | None = None,
    initial: int | None = None,
    warmup_s: float = 0.0,
    slo: Slo | None = None,
) -> Outcome:
    """Replay `requests` against `fleet` under `controller` (deterministic for fleet.seed); the controller is
    first asked at warmup_s (until then, `initial` replicas serve), so no policy acts on empty telemetry.
    With an `slo`, completions meeting and missing it are part of the telemetry."""
    profile, shape = fleet.profile, fleet.shape
    times = requests.times.tolist()
    prompts = requests.prompts.tolist()
    outputs = requests.outputs.tolist()
    n = len(times)
    span = span_s if span_s is not None else (times[-1] if n else 0.0)
    end_s = span + 600.0  # let the last requests finish
    telemetry = Telemetry.empty(end_s)
    arrivals, area = telemetry.arrivals, telemetry.in_flight_area
    finished, missed = telemetry.finished, telemetry.missed
    ttft_limit, tpot_limit, latency_limit = slo.limits if slo else (math.inf,) * 3
    ttft = [math.nan] * n
    tpot = [math.nan] * n
    latency = [math.nan] * n
    rng = np.random.default_rng(fleet.seed)
    sigma = fleet.noise_sigma
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
    max_batch, instances, cold_s = shape.max_batch, shape.instances, fleet.cold_s

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
            st = service_time([prompts[i] for i in batch], [outputs[i] for i in batch], profile, instances, fleet.speed_factor)
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

    start = fleet.min_replicas if initial is None else initial
    for _ in range(start):  # replicas in force when the trace begins: already ready, GPU time from 0
        r = _Replica(len(replicas), 0.0, instances)
        r.state = READY
        replicas.append(r)
        routable.append(r)
        alive += 1
    next_tick = warmup_s
    period = controller.period_s
    i = 0
    last_desired = start
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
                    if slo is not None:
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
            obs = Observation(now, telemetry, len(routable), alive - draining)
            desired = min(fleet.max_replicas, max(fleet.min_replicas, int(controller.decide(obs))))
            if desired != obs.current:
                scale_to(desired, now)
            if desired != last_desired:
                actions += 1
                last_desired = desired
            next_tick = now + period
        if i >= n and not events and next_tick > span:
            break
    final = min(end_s, max(now if now != math.inf else span, span))  # past end_s, what is left counts as unfinished
    advance(final)
    for r in replicas:
        if r.state != STOPPED:
            stop(r, final)
    used = int(math.ceil(final)) + 1
    return Outcome(
        controller.name,
        np.asarray(ttft),
        np.asarray(tpot),
        np.asarray(latency),
        np.ones(n, dtype=bool),
        gpu_s,
        samples_total[:used],
        samples_ready[:used],
        actions,
        cold_starts,
        extra={"in_flight_area": float(area.sum())},
    )
