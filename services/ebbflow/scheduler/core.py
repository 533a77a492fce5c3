"""The scaling rule, as a pure function of a snapshot and a forecast.

Reactive floor: ceil(in_flight / target_in_flight_per_replica).
Predictive need: the forecast quantile's peak demand over the lead time (the
time a new replica takes to become ready, plus one decision interval),
turned into in-flight requests by Little's law with the model's observed
time in system, then into replicas the same way. The recommendation is the
larger of the two, clamped to the policy's bounds.

Panic (Knative's): when the in-flight load needs panic_threshold times the
replicas in force, scale up at once (past any scale-up window or step limit);
for panic_hold_s after, the burst window keeps leading scale-up and nothing
scales down.

With a capacity model (scheduler.capacity: curves measured on the emulator's
service time), the current and forecast request rates become the fewest
replicas whose pool meets the model's SLO instead, with in-flight as a floor
for backlogs that outlast the lead. The live scheduler measures the curves
for each model with an SLO (scheduler.curves); the simulator runs the same path.

Scale to zero: with min_replicas 0, the last replica goes only after no
request arrived for scale_to_zero_idle_s (KEDA's cooldown; Knative's
scale-to-zero grace), on top of the scale-down delay. The forecast keeps (or
brings back) a replica only past the activation threshold (KEDA's): when the
chance of at least one arrival within the idle window, Poisson at the median
forecast's mean rate over that window, is at least activation_probability.
(The median, not the sizing quantile: right after load stops, p90 still
carries the spread of the level just left, and read as a rate it kept a
replica for minutes of silence.) Without it a
forecast of 0.003 req/s became 0.0003 requests in flight, which the ceiling
turned into one replica held forever.

Forecasts the forecaster marks untrusted (untrusted_reason) are not acted on,
and a forecast peak above FORECAST_SANITY_FACTOR times the highest arrival
rate of the last hour is capped there: a steady step sized on a forecast
hundreds of times the rate ever seen is never what the operator wants.

Bounds apply at once: a lowered max_replicas (or raised min_replicas) is not
held by the scale-down window, the step limits or a panic.

Scale-up is immediate; scale-down takes the maximum recommendation over the
last `scale_down_delay_s` (Knative's scale-down delay), and since each
recommendation already includes the forecast, the window only shrinks when
the forecast agrees. Missing or stale load means "hold": an invalid decision
with a reason, never a scale-down. A missing or stale forecast only drops
the predictive part, and the reason says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

from ebbflow.policy import ModelPolicy

if TYPE_CHECKING:
    from ebbflow.scheduler.capacity import CapacityModel

# in_flight is a time average: tiny float error must not add a replica.
_EPSILON = 1e-9


@dataclass(frozen=True)
class ForecastView:
    """A forecast of demand: quantile level -> arrival_rps at issued + (i + 1) * step_s."""

    issued_s: float
    step_s: float
    quantiles: dict[float, tuple[float, ...]]
    method: str = ""
    untrusted_reason: str = ""
    """Why the forecaster says not to act on it ("" when it may be)."""


@dataclass(frozen=True)
class LoadView:
    """What the rule needs to know about one model's load."""

    fresh: bool
    in_flight: float
    arrival_rps: float
    reason: str = ""
    forecast: ForecastView | None = None
    burst_in_flight: float = -1.0
    """In-flight over the short (panic) window, when the load above is over a longer one; < 0: in_flight."""
    idle_s: float = -1.0
    """Seconds since the model's last arrival; < 0: none seen (scale to zero waits for scale_to_zero_idle_s of it)."""
    recent_peak_rps: float = -1.0
    """Highest arrival rate over the last hour (forecast peaks are capped at FORECAST_SANITY_FACTOR x this); < 0: not known."""


@dataclass(frozen=True)
class ScalingState:
    """Recommendations inside the scale-down window: (time_s, replicas), oldest first; the last known time in system."""

    recommendations: tuple[tuple[float, int], ...] = ()
    time_in_system_s: float = 0.0
    panic_until_s: float = 0.0


@dataclass(frozen=True)
class Prediction:
    """The predictive part of a decision (all zero when it did not apply)."""

    replicas: int = 0
    forecast_rps: float = 0.0
    lead_s: float = 0.0
    time_in_system_s: float = 0.0
    note: str = ""
    inactive: bool = False
    """The forecast fell below the activation threshold of a model that may scale to zero."""


@dataclass(frozen=True)
class Decision:
    valid: bool
    replicas: int
    reason: str
    recommendation: int = 0
    window: tuple[int, ...] = ()
    reactive: int = 0
    prediction: Prediction = Prediction()
    wanted: int = -1
    """Replicas before the fleet GPU budget's cap (-1: the same as replicas)."""

    @property
    def demand(self) -> int:
        """What the model wants, budget or not."""
        return self.replicas if self.wanted < 0 else self.wanted


def bounded(replicas: int, policy: ModelPolicy) -> int:
    return min(policy.max_replicas, max(policy.min_replicas, replicas))


def recommend(in_flight: float, policy: ModelPolicy) -> int:
    """Replicas needed right now for this in-flight load at the policy's target, within bounds."""
    return bounded(math.ceil(max(0.0, in_flight) / policy.in_flight_target - _EPSILON), policy)


def tolerated(demand: float, sized_for: float, policy: ModelPolicy) -> bool:
    """Kubernetes HPA's tolerance: demand within scale_tolerance of what the replicas in force are sized for
    changes nothing (noise around a boundary must not flap)."""
    return sized_for > 0 and abs(demand / sized_for - 1.0) <= policy.scale_tolerance


def initial_decision(policy: ModelPolicy) -> Decision:
    """The first desired state of a model nobody has decided for yet: its floor."""
    return Decision(True, policy.min_replicas, f"initial: {policy.min_replicas} replica(s) from min_replicas", policy.min_replicas)


def resume_state(current: int, now_s: float) -> ScalingState:
    """State for a scheduler that starts (or restarts) with `current` replicas in force.

    Counting the replicas in force as a fresh recommendation means a restart
    never scales down before a full scale-down delay has passed.
    """
    return ScalingState(((now_s, current),))


def stabilised(window: tuple[tuple[float, int], ...], policy: ModelPolicy, current: int, now_s: float) -> int:
    """Kubernetes HPA's stabilisation: up only to the lowest recommendation of the scale-up window,
    down only to the highest of the scale-down window; otherwise stay."""
    up = min(r for t, r in window if t > now_s - policy.scale_up_delay_s or t == now_s)
    down = max(r for t, r in window if t > now_s - policy.scale_down_delay_s or t == now_s)
    if up > current:
        return up
    if down < current:
        return down
    return current


def limit_step(desired: int, current: int, policy: ModelPolicy) -> tuple[int, str]:
    """At most max_scale_*_step replicas or max_scale_*_percent of current per decision (the larger limit applies)."""
    def limit(step: int, percent: float) -> int | None:
        limits = [step] if step else []
        if percent:
            limits.append(max(1, math.ceil(current * percent / 100)))
        return max(limits) if limits else None

    if desired > current:
        most = limit(policy.max_scale_up_step, policy.max_scale_up_percent)
        if most is not None and desired - current > most:
            return current + most, f"scale-up limited to +{most} per decision"
    elif desired < current:
        most = limit(policy.max_scale_down_step, policy.max_scale_down_percent)
        if most is not None and current - desired > most:
            return current - most, f"scale-down limited to -{most} per decision"
    return desired, ""


FORECAST_SANITY_FACTOR = 3.0
"""A forecast peak is capped at this multiple of the highest arrival rate seen over the last hour."""

DEFAULT_LEAD_S = 30.0
"""Lead time until a cold start of the model has been seen, seconds."""


def lead_time(policy: ModelPolicy, cold_starts_s: Sequence[float], interval_s: float) -> float:
    """How far ahead to order capacity: the policy's lead, or the slowest recent cold start plus one decision interval."""
    if policy.lead_s > 0:
        return policy.lead_s
    return (max(cold_starts_s) if cold_starts_s else DEFAULT_LEAD_S) + interval_s


def forecast_peak(load: LoadView, policy: ModelPolicy, lead_s: float, now_s: float) -> tuple[float | None, str]:
    """The policy's forecast quantile at its peak over the lead, or None and why it cannot be read; with a peak,
    a note when it was capped at FORECAST_SANITY_FACTOR x the highest rate of the last hour."""
    q = policy.forecast_quantile
    if q <= 0:
        return None, "prediction off"
    forecast = load.forecast
    if forecast is not None and forecast.untrusted_reason:
        return None, f"forecast not trusted: {forecast.untrusted_reason}"
    if forecast is None or q not in forecast.quantiles or not forecast.quantiles[q]:
        return None, "no trusted forecast yet"
    values = forecast.quantiles[q]
    if now_s - forecast.issued_s > 3 * forecast.step_s + lead_s:
        return None, f"forecast is {now_s - forecast.issued_s:.0f} s old"
    # Every step that ends within the lead, from now: capacity ordered now serves from then on.
    last = min(len(values), max(1, math.ceil((now_s + lead_s - forecast.issued_s) / forecast.step_s)))
    window = [v for v in values[:last] if not math.isnan(v)]
    if not window:
        return None, "forecast has no values over the lead"
    peak = max(0.0, max(window))
    if load.recent_peak_rps >= 0 and peak > FORECAST_SANITY_FACTOR * load.recent_peak_rps:
        cap = FORECAST_SANITY_FACTOR * load.recent_peak_rps
        return cap, f"p{q * 100:g} {peak:.2f} rps capped at {cap:.2f}, {FORECAST_SANITY_FACTOR:g}x the highest rate of the last hour"
    return peak, ""


def expected_rate(forecast: ForecastView, window_s: float, now_s: float) -> tuple[float, float]:
    """The median forecast's mean rate over the next window_s (the steps it covers; the horizon at most), and the
    quantile read (0.5, or the lowest one published)."""
    level = 0.5 if 0.5 in forecast.quantiles else min(forecast.quantiles)
    values = forecast.quantiles[level]
    first = max(0, math.floor((now_s - forecast.issued_s) / forecast.step_s))
    last = max(first + 1, math.ceil((now_s + window_s - forecast.issued_s) / forecast.step_s))
    window = [v for v in values[first:last] if not math.isnan(v)] or [v for v in values[-1:] if not math.isnan(v)]
    return (max(0.0, sum(window) / len(window)) if window else 0.0), level


def predict(
    load: LoadView, policy: ModelPolicy, time_in_system_s: float, lead_s: float, now_s: float, capacity: "CapacityModel | None" = None
) -> Prediction:
    """Replicas for the forecast quantile's peak demand over the lead; Prediction() with a note when it cannot apply."""
    peak, why = forecast_peak(load, policy, lead_s, now_s)
    if peak is None:
        return Prediction(note=why)
    if policy.min_replicas == 0:
        # KEDA's activation threshold: rounding up a sliver of a replica is not a reason to keep one.
        window = policy.idle_window_s
        rate, level = expected_rate(load.forecast, window, now_s) if load.forecast is not None else (peak, policy.forecast_quantile)
        chance = 1.0 - math.exp(-rate * window)
        if chance < policy.activation:
            note = (
                f"below activation: forecast p{level * 100:g} {rate:.3f} rps gives a {chance:.0%} chance "
                f"of an arrival within {window:g} s (activation_probability {policy.activation:g})"
            )
            return Prediction(0, peak, lead_s, time_in_system_s, note=f"{note}; {why}" if why else note, inactive=True)
    if capacity is None and time_in_system_s <= 0:
        return Prediction(note="time in system not known yet")
    if capacity is not None:
        return Prediction(bounded(capacity.replicas_for(peak), policy), peak, lead_s, time_in_system_s, why)
    return Prediction(recommend(peak * time_in_system_s, policy), peak, lead_s, time_in_system_s, why)


@dataclass(frozen=True)
class DecisionInputs:
    """Everything one decision is a function of (Ray Serve's AutoscalingContext): `decide` reads nothing else, a
    decision records exactly this (scheduler.explain), and `explain` rebuilds it to decide again."""

    load: LoadView | None
    """The model's load, None before any snapshot arrived (a hold)."""
    policy: ModelPolicy
    """Resolved (settings left at 0 taken from the model's config) and shaped (vertical_auto's choice)."""
    state: ScalingState
    current_replicas: int
    """The desired replicas in force."""
    now_s: float
    woken: bool = False
    """Requests are held for the model (scale from zero)."""
    lead_s: float = 0.0
    """How far ahead capacity is ordered, seconds."""
    wall_s: float = 0.0
    """Wall-clock time a pin's expiry is compared with, unix seconds."""
    capacity: "CapacityModel | None" = None
    """The model's capacity curves: demand in requests per second becomes the fewest replicas whose pool meets the SLO."""
    capacity_note: str = ""
    """Why a policy with an SLO is sized without curves (they are being measured, or cannot be)."""
    budget: tuple[int, str] | None = None
    """The most replicas a fleet GPU budget leaves this model, and why (scheduler.budget); None: no budget."""
    vertical_note: str = ""
    """Which shape the policy carries and why (scheduler.vertical), for the reason."""
    capacity_key: str = ""
    """Where `capacity` is stored (the `capacity` bucket), so `explain` reads the same curves; not read by decide."""


DRIVERS = ("initial", "pin", "bounds", "budget", "panic", "wake-up", "forecast", "load", "idle")
"""What drove a written decision, coarsely, for a metric label and a dashboard annotation (the reason has the rest)."""


def driver(decision: Decision, current: int) -> str:
    """The one of DRIVERS that drove `decision` from `current` replicas, the first that applies in that order."""
    reason = decision.reason
    if reason.startswith("initial"):
        return "initial"
    if reason.startswith("pinned"):
        return "pin"
    if reason.startswith("hold at bounds") or "_replicas" in reason and "applied at once" in reason:
        return "bounds"
    if decision.wanted >= 0:
        return "budget"
    if reason.startswith("panic") or "panic hold" in reason and decision.replicas > current:
        return "panic"
    if "scale from zero" in reason:
        return "wake-up"
    if decision.replicas == 0 < current:
        return "idle"
    if decision.prediction.replicas > decision.reactive and decision.replicas > current:
        return "forecast"
    if decision.replicas < current and decision.prediction.replicas >= decision.replicas > decision.reactive:
        return "forecast"  # the forecast holds up a scale-down the load alone would take further
    return "load"


def decide(inputs: DecisionInputs) -> tuple[Decision, ScalingState]:
    """Desired replicas for one model. `current_replicas` is the desired count in force. With a capacity model,
    demand in requests per second (current and forecast) becomes the fewest replicas whose pool meets the SLO on
    the measured curves; in-flight against what a replica carries at its SLO rate is a floor under that (a heavier
    token mix or a building queue raises it) when that work outlasts the lead. Under a budget, models of lower
    priority give way first."""
    load, policy, state, current, now_s = inputs.load, inputs.policy, inputs.state, inputs.current_replicas, inputs.now_s
    woken, lead_s, wall_s, capacity, capacity_note = inputs.woken, inputs.lead_s, inputs.wall_s, inputs.capacity, inputs.capacity_note
    budget, vertical_note = inputs.budget, inputs.vertical_note
    if policy.pin_active(wall_s):
        until = f" until {policy.pin_until_unix_s:.0f} (unix s)" if policy.pin_until_unix_s else ""
        reason = f"pinned at {policy.pin_replicas} by {policy.pin_by}: {policy.pin_reason}{until}"
        # The pin counts as a recommendation, so its end does not drop replicas before the scale-down delay.
        window = tuple((t, r) for t, r in state.recommendations if t > now_s - policy.scale_down_delay_s) + ((now_s, policy.pin_replicas),)
        return Decision(True, policy.pin_replicas, reason, policy.pin_replicas, tuple(r for _, r in window)), ScalingState(window, state.time_in_system_s)
    if load is None or not load.fresh:
        why = load.reason if load is not None and load.reason else "no load data yet"
        floor = max(current, policy.min_replicas, 1 if woken else 0)
        floor = min(floor, policy.max_replicas)
        if floor != current:
            # Bounds and wake-ups still apply while holding: they never need load data.
            return Decision(True, floor, f"hold at bounds: {why}"), state
        return Decision(False, current, f"hold: {why}"), state
    idled = ""
    if policy.min_replicas == 0 and load.idle_s >= policy.idle_window_s and load.burst_in_flight == 0:
        # Idle for the idle window with nothing in flight now: the load window's average is memory of load that
        # is gone, not demand. Without this a 30 s load window held the last replica that long past the idle
        # time, on top of the scale-down delay.
        load = replace(load, in_flight=0.0, arrival_rps=0.0)
        idled = f"; idle {load.idle_s:.0f} s with nothing in flight: past load no longer counts"
    time_in_system = state.time_in_system_s
    if load.arrival_rps > 0 and load.in_flight > 0:
        time_in_system = load.in_flight / load.arrival_rps  # Little's law on what the routers see
    burst = 0
    if capacity is not None:
        # Demand becomes the fewest replicas whose pool meets the SLO on the measured curves. In-flight is the
        # backstop (a heavier token mix or a building queue raises it past what the rate asks for), but only
        # for work that outlasts a cold start: a backlog the replicas in force clear before a new one could
        # be ready is not worth a replica (bursts of seconds against a 30 s cold start).
        by_rate = capacity.replicas_for(load.arrival_rps)
        if tolerated(load.arrival_rps, current * capacity.rps_at_slo(current), policy):
            by_rate = current

        def outlasts(in_flight: float) -> bool:
            return in_flight / (max(1, current) * capacity.max_rps) > lead_s

        # Sizing a queue to drain within a lead (arrivals + backlog / lead) instead was tried: a spike cost 0.97x
        # the oracle instead of 1.51x, but when the token mix moves past the curves' (long prompts), the backlog
        # looked drainable on the old curves and attainment fell from 53 % to 35 %: carrying the whole in-flight
        # is the backstop for a mix the curves do not know yet.
        by_in_flight = capacity.replicas_for_in_flight(load.in_flight) if outlasts(load.in_flight) else 0
        reactive = bounded(max(by_rate, by_in_flight), policy)
        if load.burst_in_flight >= 0 and outlasts(load.burst_in_flight):
            burst = bounded(capacity.replicas_for_in_flight(load.burst_in_flight), policy)
        queue = f"in_flight {load.in_flight:.2f} -> {by_in_flight}" if by_in_flight else f"in_flight {load.in_flight:.2f} clears within the {lead_s:.0f} s lead"
        demand = f"{load.arrival_rps:.2f} rps -> {by_rate}, {queue} at {capacity.slo.describe()} (capacity curve)"
    else:
        if load.burst_in_flight >= 0:
            burst = recommend(load.burst_in_flight, policy)
        reactive = recommend(load.in_flight, policy)
        if tolerated(load.in_flight, current * policy.in_flight_target, policy):
            reactive = bounded(current, policy)
        demand = f"in_flight {load.in_flight:.2f} / {policy.in_flight_target_text} -> {reactive}"
        if capacity_note:
            demand += f" (no SLO sizing: {capacity_note})"
    prediction = predict(load, policy, time_in_system, lead_s, now_s, capacity)
    recommendation = max(reactive, prediction.replicas)
    if woken:
        recommendation = max(recommendation, min(1, policy.max_replicas))
    keep = max(policy.scale_down_delay_s, policy.scale_up_delay_s)
    window = tuple((t, r) for t, r in state.recommendations if t > now_s - keep) + ((now_s, recommendation),)
    # Knative's panic: a burst far beyond the replicas in force skips the scale-up window and step limits.
    panic_need = max(reactive, burst)
    # A need that only min_replicas makes is the bounds' business (applied at once below), not a burst's.
    panicking = policy.panic_threshold > 0 and current >= 1 and panic_need >= policy.panic_threshold * current and panic_need > policy.min_replicas
    panic_until = now_s + policy.panic_hold_s if panicking else state.panic_until_s
    limited = ""
    in_panic = now_s < panic_until
    if panicking or in_panic:
        # Knative's panic mode: while it lasts the burst window leads (a step met at the first trigger only in
        # part is followed up at once, not after the stable window catches up) and nothing scales down.
        desired = max(recommendation, panic_need, current)
    else:
        desired = stabilised(window, policy, current, now_s)
        desired, limited = limit_step(desired, current, policy)
    idle_hold = ""
    if desired == 0 < current and 0 <= load.idle_s < policy.scale_to_zero_idle_s:
        desired = 1  # the last replica stays until the model has been idle long enough
        idle_hold = f"; keeping 1 replica: last request {load.idle_s:.0f} s ago, scale to zero after {policy.scale_to_zero_idle_s:g} s idle"
    # Bounds are the operator's word: a lowered maximum is not held by the window, a step limit or a panic.
    bound = ""
    if bounded(desired, policy) != desired:
        desired = bounded(desired, policy)
        bound = f"{'max' if desired == policy.max_replicas else 'min'}_replicas {desired} applied at once"
    capped = f" ({prediction.note})" if prediction.note else ""
    if prediction.replicas and capacity is not None:
        demand += f"; forecast p{policy.forecast_quantile * 100:g} {prediction.forecast_rps:.2f} rps over {prediction.lead_s:.0f} s -> {prediction.replicas}{capped}"
    elif prediction.replicas:
        demand += (
            f"; forecast p{policy.forecast_quantile * 100:g} {prediction.forecast_rps:.2f} rps over {prediction.lead_s:.0f} s "
            f"x {prediction.time_in_system_s:.2f} s in system -> {prediction.replicas}{capped}"
        )
    elif prediction.inactive:
        demand += f"; {prediction.note}"
    elif policy.forecast_quantile > 0:
        demand += f" (no prediction: {prediction.note})"
    if bound and desired > current:
        reason = f"scale up: {bound} ({demand})"
    elif bound and desired < current:
        reason = f"scale down: {bound}, not after the scale-down delay ({demand})"
    elif desired > current:
        reason = f"scale up: {demand}"
    elif desired < current:
        reason = f"scale down: max recommendation over the last {policy.scale_down_delay_s:g} s is {desired} ({demand})"
    elif recommendation < current:
        reason = f"waiting to scale down: {recommendation} recommended, {current} held for the {policy.scale_down_delay_s:g} s delay ({demand})"
    elif recommendation > current:
        reason = f"waiting to scale up: {recommendation} recommended, the {policy.scale_up_delay_s:g} s scale-up window still holds {current} ({demand})"
    else:
        reason = f"steady: {demand}"
    if woken and desired >= 1 and current == 0:
        reason = f"scale from zero: requests are held; {reason}"
    if limited:
        reason += f"; {limited}"
    reason += idle_hold + idled
    wanted = -1
    if budget is not None and desired > max(budget[0], 0):
        wanted, desired = desired, max(budget[0], 0)
        reason += f"; GPU budget caps it at {desired} of {wanted}: {budget[1]}"
    if vertical_note:
        reason += f"; {vertical_note}"
    if panicking:
        burst_in_flight = max(load.in_flight, load.burst_in_flight)
        reason = f"panic: in_flight {burst_in_flight:.2f} needs {panic_need} replicas, >= {policy.panic_threshold:g} x the {current} in force; {reason}"
    elif in_panic:
        if desired > current and panic_need > recommendation:  # the burst leads, so the reason starts with it
            reason = f"panic: burst in_flight {max(load.in_flight, load.burst_in_flight):.2f} needs {panic_need}; {reason}"
        # A bound applied at once overrides the hold; saying "no scale-down" beside it would contradict the count.
        reason += f"; panic hold for {panic_until - now_s:.0f} s more: " + ("only the bound scales it down" if bound and desired < current else "no scale-down")
    decision = Decision(True, desired, reason, recommendation, tuple(r for _, r in window), reactive, prediction, wanted)
    return decision, ScalingState(window, time_in_system, panic_until)
