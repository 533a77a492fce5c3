"""Per-request discrete-event simulation of one model's fleet under an autoscaling policy.

The physics (replicas starting, routing, Triton batches on the emulator's
service time, draining) are ebbflow.emulator.pool's, the loop the scheduler's
capacity curves are measured on too; here a `Fleet` says which hardware and
which bounds, and a `Controller` is asked for the replicas every period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ebbflow.emulator.pool import Pool, Telemetry, run_pool
from ebbflow.emulator.service_time import Profile
from ebbflow.scheduler.capacity import Shape, Slo
from ebbflow.sim.control import Controller, Observation
from ebbflow.sim.workload import Requests


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

    @property
    def pool(self) -> Pool:
        return Pool(self.profile, self.shape.instances, self.shape.max_batch, self.speed_factor, self.noise_sigma, self.cold_s, self.seed)


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

    def decide(now_s: float, telemetry: Telemetry, ready: int, current: int) -> int:
        return min(fleet.max_replicas, max(fleet.min_replicas, int(controller.decide(Observation(now_s, telemetry, ready, current)))))

    run = run_pool(
        fleet.pool, requests.times, requests.prompts, requests.outputs, decide, controller.period_s,
        fleet.min_replicas if initial is None else initial, span_s, warmup_s, slo.limits if slo else None,
    )
    return Outcome(
        controller.name,
        np.asarray(run.ttft_s),
        np.asarray(run.tpot_s),
        np.asarray(run.latency_s),
        np.ones(len(requests.times), dtype=bool),
        run.gpu_s,
        run.replicas,
        run.ready,
        run.actions,
        run.cold_starts,
        extra={"in_flight_area": float(run.telemetry.in_flight_area.sum())},
    )
