"""Recording a decision's inputs and recomputing it from them: the same pure rule, called again.

Times are recorded as ages at decision time, so a recomputation runs at
now = 0 with every past moment at minus its age.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ebbflow.runtime.config import ModelPolicy
from ebbflow.scheduler.core import Decision, ForecastView, LoadView, ScalingState, decide, initial_decision
from ebbflow.v1 import forecast_pb2, policy_pb2, scheduling_pb2

if TYPE_CHECKING:
    from ebbflow.scheduler.capacity import CapacityModel


def record_inputs(
    load: LoadView | None,
    policy_message: policy_pb2.ScalingPolicy,
    state: ScalingState,
    current: int,
    now_s: float,
    woken: bool,
    lead_s: float,
    decision: Decision,
    wall_s: float = 0.0,
    capacity_key: str = "",
    capacity_calibration: float = 0.0,
    capacity_note: str = "",
    budget: tuple[int, str] | None = None,
    vertical_note: str = "",
) -> scheduling_pb2.DecisionInputs:
    inputs = scheduling_pb2.DecisionInputs(
        in_flight=load.in_flight if load else 0.0,
        arrival_rps=load.arrival_rps if load else 0.0,
        current_replicas=current,
        window_recommendations=decision.window,
        forecast_rps=decision.prediction.forecast_rps,
        forecast_quantile=policy_message.forecast_quantile,
        lead_s=lead_s,
        time_in_system_s=decision.prediction.time_in_system_s,
        predictive_replicas=decision.prediction.replicas,
        reactive_replicas=decision.reactive,
        policy=policy_message,
        fresh=bool(load and load.fresh),
        load_reason=load.reason if load else "",
        woken=woken,
        prior_recommendations=[r for _, r in state.recommendations],
        prior_ages_s=[now_s - t for t, _ in state.recommendations],
        prior_time_in_system_s=state.time_in_system_s,
        wall_unix_s=wall_s,
        prior_panic_left_s=max(0.0, state.panic_until_s - now_s),
        capacity_key=capacity_key,
        capacity_calibration=capacity_calibration,
        capacity_note=capacity_note,
        idle_s=load.idle_s if load else -1.0,
        budgeted=budget is not None,
        budget_cap=max(0, budget[0]) if budget else 0,
        budget_note=budget[1] if budget else "",
        vertical_note=vertical_note,
        burst_in_flight=load.burst_in_flight if load is not None and load.burst_in_flight >= 0 else None,
    )
    if load is not None and load.recent_peak_rps >= 0:
        inputs.recent_peak_rps = load.recent_peak_rps
    forecast = load.forecast if load else None
    if forecast is not None:
        inputs.forecast_age_s = now_s - forecast.issued_s
        inputs.forecast_step_s = forecast.step_s
        inputs.forecast_untrusted_reason = forecast.untrusted_reason
        inputs.forecast.extend(forecast_pb2.QuantileSeries(quantile=q, arrival_rps=v) for q, v in sorted(forecast.quantiles.items()))
    return inputs


def recompute(inputs: scheduling_pb2.DecisionInputs, policy: ModelPolicy, capacity: "CapacityModel | None" = None) -> Decision:
    """The decision the rule makes for these inputs (at now = 0), with the capacity curves they name (read by the caller)."""
    if inputs.initial:
        return initial_decision(policy)
    forecast = None
    if inputs.forecast or inputs.forecast_untrusted_reason:
        forecast = ForecastView(
            -inputs.forecast_age_s,
            inputs.forecast_step_s,
            {round(q.quantile, 4): tuple(q.arrival_rps) for q in inputs.forecast},
            untrusted_reason=inputs.forecast_untrusted_reason,
        )
    load = LoadView(
        inputs.fresh, inputs.in_flight, inputs.arrival_rps, inputs.load_reason, forecast,
        # Decisions recorded before the field existed read 0 there; panic cannot have engaged on a burst of 0.
        burst_in_flight=inputs.burst_in_flight if inputs.HasField("burst_in_flight") else -1.0, idle_s=inputs.idle_s,
        recent_peak_rps=inputs.recent_peak_rps if inputs.HasField("recent_peak_rps") else -1.0,
    )
    state = ScalingState(
        tuple((-age, r) for age, r in zip(inputs.prior_ages_s, inputs.prior_recommendations)), inputs.prior_time_in_system_s, inputs.prior_panic_left_s
    )
    decision, _ = decide(
        load, policy, state, inputs.current_replicas, 0.0, inputs.woken, inputs.lead_s, inputs.wall_unix_s, capacity, inputs.capacity_note,
        (inputs.budget_cap, inputs.budget_note) if inputs.budgeted else None, inputs.vertical_note,
    )
    return decision
