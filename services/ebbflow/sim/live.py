"""Live against simulated: the pure half of `ebbflow replay --live`.

The shell (`ebbflow.live_replay`) drives a trace through a running stack and
samples its fleet; this module turns the trace into the requests it sends,
simulates the same trace under the same policy on the same clock, and
measures how far the two agree.

Both sides run on the live wall clock: the trace's arrival times are divided
by the speedup K, an emulated second lasts `time_scale` wall seconds (the
simulated fleet runs 1/time_scale times faster than the profile, as the Triton
model sleeps service_time x time_scale), and the policy's delays are wall
seconds in both. The simulated controller is fed the way the live scheduler
service feeds `scheduler.core.decide`: in-flight and arrivals over its load
window (`scheduler.load_window_s`), in-flight over the burst window for
panic (`scheduler.burst_window_s`), seconds
since the last arrival for scale to zero, and the forecaster's Selector over
arrival rates at the live stack's finest resolution, acted on only after the
same number of observed bins. What the live stack adds on top (scrape lag,
process starts under CPU contention, its own forecast of what the collector
measured) is what the comparison is for: a live-only fault shows up as live
replicas outside the simulator's band.

The band: live ready replicas at time t agree when they lie between the
simulator's lowest and highest ready count over [t - W, t + W], W being the
slowest cold start measured on the live stack plus one decision interval.
Decisions, cold starts and drains land up to that much apart on the two
sides without either being wrong; a count outside the band over a whole cold
start is a different decision, not a timing difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ebbflow.emulator.service_time import Profile
from ebbflow.policy import ModelPolicy
from ebbflow.runtime.config import SchedulerConfig
from ebbflow.scheduler.capacity import CapacityModel, Shape
from ebbflow.scheduler.core import DecisionInputs, LoadView, ScalingState, decide, resume_state
from ebbflow.sim.control import Observation
from ebbflow.sim.des import Fleet, Outcome, simulate
from ebbflow.sim.ebbflow_policy import Forecasts, forecasts
from ebbflow.sim.workload import Requests

WORDS = ("the", "fleet", "scales", "with", "demand", "and", "returns", "to", "its", "floor")


@dataclass(frozen=True)
class PlannedRequest:
    """One request as sent: when (wall seconds after the start), the prompt's words and max_tokens."""

    send_s: float
    prompt_words: int
    max_tokens: int


def plan_requests(requests: Requests, speedup: float, max_prompt_words: int, max_tokens: int) -> tuple[PlannedRequest, ...]:
    """The trace's requests on the wall clock (arrival / speedup) with token counts the emulated model accepts:
    a prompt token is one word, at least one and at most max_prompt_words; outputs at most max_tokens."""
    if speedup <= 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    times = np.asarray(requests.times, dtype=float)
    start = float(times[0]) if len(times) else 0.0
    return tuple(
        PlannedRequest(float(t - start) / speedup, int(min(max(1, p), max_prompt_words)), int(min(max(0, o), max_tokens)))
        for t, p, o in zip(times, requests.prompts, requests.outputs)
    )


def prompt_text(words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(words))


def as_requests(plan: tuple[PlannedRequest, ...], name: str) -> Requests:
    """The planned requests as simulator input, on the wall clock."""
    return Requests(
        name,
        np.array([r.send_s for r in plan], dtype=float),
        np.array([r.prompt_words for r in plan], dtype=np.int64),
        np.array([r.max_tokens for r in plan], dtype=np.int64),
    )


@dataclass(frozen=True)
class LiveSettings:
    """What the simulated side copies from the live stack."""

    time_scale: float
    """Emulated seconds x this = wall seconds (actuator.time_scale)."""
    cold_start_s: float
    """Start to ready, wall seconds, as measured on the live stack."""
    shape: Shape
    policy: ModelPolicy
    initial_replicas: int
    forecast_step_s: float = 10.0
    """The forecaster's finest resolution (forecaster.resolutions_s[0])."""
    forecast_horizon_steps: int = 12
    min_forecast_observations: int = SchedulerConfig.min_forecast_observations
    """scheduler.min_forecast_observations: bins seen before a forecast is acted on."""
    interval_s: float = 1.0
    """The collector's interval and the scheduler's tick."""
    load_window_s: float = 30.0
    """scheduler.load_window_s: in-flight and arrivals are averaged over this."""
    burst_window_s: float = 6.0
    """scheduler.burst_window_s: panic reads in-flight over this."""


@dataclass
class LiveLikeEbbflow:
    """scheduler.core.decide fed as the live scheduler service feeds it (see the module docstring)."""

    policy: ModelPolicy
    forecast: Forecasts | None
    lead_s: float
    min_forecast_observations: int
    capacity: CapacityModel | None = None
    window_s: float = 30.0
    burst_window_s: float = 6.0
    name: str = "simulated"
    period_s: float = 1.0
    state: ScalingState = field(default_factory=ScalingState)
    started: bool = False
    changes: list[tuple[float, int, int, str]] = field(default_factory=list)
    """(time_s, from, to, reason) of every change of the desired count."""

    def decide(self, obs: Observation) -> int:
        if not self.started:
            self.state, self.started = resume_state(obs.current, obs.now_s), True
        view = self.forecast.at(obs.now_s, self.min_forecast_observations) if self.forecast else None
        in_flight = obs.in_flight(self.window_s)
        arrivals = obs.arrival_rps(self.window_s)
        burst = obs.in_flight(self.burst_window_s)
        # Requests held by the router wake a model at zero through a message of their own, decided on before
        # the collector has seen them: the wake-up decision sees no load (and a panic follows on the next tick).
        woken = obs.current == 0 and obs.in_flight(self.period_s) > 0  # held now, not within the load window
        if woken:
            in_flight = arrivals = burst = 0.0
        load = LoadView(True, in_flight, arrivals, forecast=view, burst_in_flight=burst, idle_s=obs.idle_s())
        decision, self.state = decide(DecisionInputs(load, self.policy, self.state, obs.current, obs.now_s, woken=woken, lead_s=self.lead_s, capacity=self.capacity))
        if decision.replicas != obs.current:
            self.changes.append((obs.now_s, obs.current, decision.replicas, decision.reason))
        return decision.replicas


def simulate_like_live(
    plan: tuple[PlannedRequest, ...], span_s: float, profile: Profile, settings: LiveSettings, capacity: CapacityModel | None = None
) -> tuple[Outcome, LiveLikeEbbflow]:
    """The same requests, policy and clock in the discrete-event simulator (no service-time noise: the
    emulated model has none)."""
    requests = as_requests(plan, "live plan")
    step = settings.forecast_step_s
    rates = requests.counts(step, span_s) / step
    forecast = forecasts(rates, step, horizon=settings.forecast_horizon_steps) if settings.policy.forecast_quantile > 0 else None
    policy = settings.policy
    fleet = Fleet(
        profile,
        settings.shape,
        cold_start_s=settings.cold_start_s,
        speed_factor=1.0 / settings.time_scale,
        noise_sigma=0.0,
        min_replicas=policy.min_replicas,
        max_replicas=policy.max_replicas,
    )
    lead = policy.lead_s or settings.cold_start_s + settings.interval_s
    controller = LiveLikeEbbflow(
        policy,
        forecast,
        lead,
        settings.min_forecast_observations,
        capacity,
        window_s=settings.load_window_s,
        burst_window_s=settings.burst_window_s,
        period_s=settings.interval_s,
    )
    outcome = simulate(requests, fleet, controller, span_s=span_s, initial=settings.initial_replicas)
    return outcome, controller


@dataclass(frozen=True)
class Agreement:
    """How often live ready replicas were inside the simulator's band, and by how much they left it."""

    window_s: float
    samples: int
    inside_share: float
    worst_above: int
    """Most replicas live was above the band's top (0: never above)."""
    worst_below: int
    outside_times_s: tuple[float, ...]
    band_low: np.ndarray
    band_high: np.ndarray


def band(simulated_ready: np.ndarray, times_s: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per time: the lowest and highest simulated ready count over [t - window_s, t + window_s] (per-second samples)."""
    n = len(simulated_ready)
    low = np.empty(len(times_s))
    high = np.empty(len(times_s))
    for i, t in enumerate(times_s):
        lo = min(n - 1, max(0, int(math.floor(t - window_s))))
        hi = min(n, max(lo + 1, int(math.ceil(t + window_s)) + 1))
        low[i], high[i] = simulated_ready[lo:hi].min(), simulated_ready[lo:hi].max()
    return low, high


def agreement(live_times_s: np.ndarray, live_ready: np.ndarray, simulated_ready: np.ndarray, window_s: float, tolerance: int = 0) -> Agreement:
    low, high = band(simulated_ready, live_times_s, window_s)
    above = live_ready - (high + tolerance)
    below = (low - tolerance) - live_ready
    outside = (above > 0) | (below > 0)
    return Agreement(
        window_s,
        len(live_ready),
        float(1.0 - outside.mean()) if len(live_ready) else math.nan,
        int(max(0, above.max(initial=0))),
        int(max(0, below.max(initial=0))),
        tuple(float(t) for t in live_times_s[outside]),
        low,
        high,
    )


def returned_at(times_s: np.ndarray, replicas: np.ndarray, floor: int, after_s: float) -> float | None:
    """First time from after_s on when replicas were at the floor and stayed there; None if they never did."""
    at_floor = replicas <= floor
    later = times_s >= after_s
    for i in np.flatnonzero(later):
        if at_floor[i:].all():
            return float(times_s[i])
    return None


def attainment(latency_s: np.ndarray, ok: np.ndarray, latency_limit_s: float) -> float:
    """Share of requests answered correctly within the limit (0: no limit, every correct answer counts)."""
    if not len(latency_s):
        return math.nan
    met = ok & (np.nan_to_num(latency_s, nan=np.inf) <= (latency_limit_s or np.inf))
    return float(met.mean())


def percentile(values: np.ndarray, q: float) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(np.percentile(finite, q)), 4) if len(finite) else None


def table(report: dict) -> str:
    """The side-by-side summary as fixed-width text."""
    live, sim, agree = report["live"], report["simulated"], report["agreement"]

    def cell(value: object) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    rows = [
        ("requests sent / simulated", live["requests"], sim["requests"]),
        ("client errors", live["errors"], "-"),
        (f"attainment ({report['objective']})", live["attainment"], sim["attainment"]),
        ("latency p50 s", live["latency_p50_s"], sim["latency_p50_s"]),
        ("latency p99 s", live["latency_p99_s"], sim["latency_p99_s"]),
        ("peak ready replicas", live["peak_ready"], sim["peak_ready"]),
        ("peak desired replicas", live["peak_desired"], sim["peak_desired"]),
        ("replica-seconds ready", live["ready_replica_s"], sim["ready_replica_s"]),
        ("changes of desired", live["decisions"], sim["decisions"]),
        ("back at floor (s after last request)", live["returned_to_floor_s"], sim["returned_to_floor_s"]),
    ]
    lines = [
        f"{report['trace']}: {report['requests']} requests over {report['span_s']:.0f} s wall (speedup {report['speedup']:g}), "
        f"model {report['model']}, time_scale {report['time_scale']:g}, cold start {report['cold_start_s']:.1f} s (measured live)",
        f"{'':<40} {'live':>12} {'simulated':>12}",
    ]
    lines += [f"{name:<40} {cell(a):>12} {cell(b):>12}" for name, a, b in rows]
    lines.append(
        f"agreement: live ready replicas inside the simulator's band (its min-max over +-{agree['window_s']:.1f} s) "
        f"{100 * agree['inside_share']:.1f} % of {agree['samples']} samples; worst above {agree['worst_above']}, below {agree['worst_below']}"
    )
    if live["errors"]:
        lines.append("client errors by code: " + ", ".join(f"{code} {n}" for code, n in live["error_codes"].items()))
    for side in ("live", "simulated"):
        for change in report[side]["changes"][:40]:
            lines.append(f"  {side:>9} t={change['t_s']:7.1f} s {change['from']} -> {change['to']}: {change['reason'][:150]}")
    return "\n".join(lines)


def plot(report: dict, live_t: np.ndarray, live_ready: np.ndarray, live_desired: np.ndarray, outcome: Outcome, agree: Agreement, arrivals: np.ndarray, path: Path) -> Path:
    """Both replica curves, the simulator's band and the request rate sent, on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(1, 2))
    top.step(np.arange(len(arrivals)), arrivals, where="post", color="black", linewidth=0.9, label="requests sent per s")
    top.set_ylabel("req/s")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(f"{report['trace']}: live against simulated ({report['model']}, speedup {report['speedup']:g}, time_scale {report['time_scale']:g})")
    sim_t = np.arange(len(outcome.ready))
    bottom.fill_between(live_t, agree.band_low, agree.band_high, color="tab:blue", alpha=0.15, step="mid", label=f"simulator band (+-{agree.window_s:.1f} s)")
    bottom.step(sim_t, outcome.ready, where="post", color="tab:blue", linewidth=1.4, label="simulated ready")
    bottom.step(sim_t, outcome.replicas, where="post", color="tab:blue", linewidth=0.8, linestyle=":", label="simulated holding a GPU")
    bottom.step(live_t, live_ready, where="post", color="tab:red", linewidth=1.4, label="live ready")
    bottom.step(live_t, live_desired, where="post", color="tab:red", linewidth=0.8, linestyle="--", label="live desired")
    bottom.set_xlabel("seconds since the first request (wall clock)")
    bottom.set_ylabel("replicas")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def changes_as_dicts(changes: list[tuple[float, int, int, str]]) -> list[dict]:
    return [{"t_s": round(t, 2), "from": a, "to": b, "reason": reason} for t, a, b, reason in changes]


__all__ = [
    "Agreement",
    "LiveLikeEbbflow",
    "LiveSettings",
    "PlannedRequest",
    "agreement",
    "attainment",
    "band",
    "plan_requests",
    "prompt_text",
    "returned_at",
    "simulate_like_live",
    "table",
]
