"""Recording a decision's inputs and deciding again from them: the same pure steps, called again.

A decision is three pure steps: vertical_auto's shape (scheduler.vertical),
the fleet GPU budget's share (scheduler.budget) and the rule
(scheduler.core.decide). This module is the one place their inputs become the
DecisionInputs message and come back from it: a new input is a field of its
step's dataclass, a line here and a proto field.

Times are recorded as ages at decision time, so a recomputation runs at
now = 0 with every past moment at minus its age.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Mapping

from ebbflow.policy import ModelPolicy, policy_to_proto
from ebbflow.scheduler.budget import BudgetInputs, Demand, budget_for
from ebbflow.scheduler.capacity import Shape
from ebbflow.scheduler.core import Decision, DecisionInputs, ForecastView, LoadView, ScalingState, decide, initial_decision
from ebbflow.scheduler.vertical import ShapeCurves, ShapeInputs, choose_vertical
from ebbflow.v1 import forecast_pb2, scheduling_pb2

if TYPE_CHECKING:
    from ebbflow.scheduler.capacity import CapacityModel

Curves = Mapping[tuple[str, float], "CapacityModel"]
"""Capacity curves by (key in the `capacity` bucket, calibration), as the caller read them."""

_SAME_NAMED = (
    # DecisionInputs field, DecisionInputs message field: copied as they are.
    ("current_replicas", "current_replicas"),
    ("woken", "woken"),
    ("lead_s", "lead_s"),
    ("wall_s", "wall_unix_s"),
    ("capacity_key", "capacity_key"),
    ("capacity_note", "capacity_note"),
    ("vertical_note", "vertical_note"),
)


def record_initial(policy: ModelPolicy) -> scheduling_pb2.DecisionInputs:
    """The inputs of a model's first desired state: its policy's floor."""
    return scheduling_pb2.DecisionInputs(policy=policy_to_proto(policy), initial=True)


def record_inputs(
    inputs: DecisionInputs, decision: Decision, shapes: ShapeInputs | None = None, budget: BudgetInputs | None = None
) -> scheduling_pb2.DecisionInputs:
    """The message a decision is published and explained with: `decide`'s inputs, what it made of them, and the
    inputs of the vertical choice and the budget's share-out when they applied."""
    load, state, now_s, budget_cap = inputs.load, inputs.state, inputs.now_s, inputs.budget
    message = scheduling_pb2.DecisionInputs(
        in_flight=load.in_flight if load else 0.0,
        arrival_rps=load.arrival_rps if load else 0.0,
        window_recommendations=decision.window,
        forecast_rps=decision.prediction.forecast_rps,
        forecast_quantile=inputs.policy.forecast_quantile,
        time_in_system_s=decision.prediction.time_in_system_s,
        predictive_replicas=decision.prediction.replicas,
        reactive_replicas=decision.reactive,
        policy=policy_to_proto(inputs.policy),
        fresh=bool(load and load.fresh),
        load_reason=load.reason if load else "",
        prior_recommendations=[r for _, r in state.recommendations],
        prior_ages_s=[now_s - t for t, _ in state.recommendations],
        prior_time_in_system_s=state.time_in_system_s,
        prior_panic_left_s=max(0.0, state.panic_until_s - now_s),
        capacity_calibration=inputs.capacity.calibration if inputs.capacity else 0.0,
        idle_s=load.idle_s if load else -1.0,
        budgeted=budget_cap is not None,
        budget_cap=max(0, budget_cap[0]) if budget_cap else 0,
        budget_note=budget_cap[1] if budget_cap else "",
        burst_in_flight=load.burst_in_flight if load is not None and load.burst_in_flight >= 0 else None,
    )
    for name, field in _SAME_NAMED:
        setattr(message, field, getattr(inputs, name))
    if load is not None and load.recent_peak_rps >= 0:
        message.recent_peak_rps = load.recent_peak_rps
    forecast = load.forecast if load else None
    if forecast is not None:
        message.forecast_age_s = now_s - forecast.issued_s
        message.forecast_step_s = forecast.step_s
        message.forecast_untrusted_reason = forecast.untrusted_reason
        message.forecast.extend(forecast_pb2.QuantileSeries(quantile=q, arrival_rps=v) for q, v in sorted(forecast.quantiles.items()))
    if shapes is not None:
        message.largest_gpu_gb = shapes.largest_gpu_gb
        message.vertical.SetInParent()  # present even if every field were zero: the choice applied
        message.vertical.CopyFrom(
            scheduling_pb2.VerticalInputs(
                instances_per_replica=shapes.policy.instances_per_replica,
                max_batch_size=shapes.policy.max_batch_size,
                in_force_instances=shapes.in_force.instances,
                in_force_max_batch_size=shapes.in_force.max_batch,
                candidates=[
                    scheduling_pb2.ShapeCurves(
                        instances_per_replica=c.shape.instances,
                        max_batch_size=c.shape.max_batch,
                        capacity_key=c.key if c.model is not None else "",
                        capacity_calibration=c.model.calibration if c.model is not None else 0.0,
                    )
                    for c in shapes.candidates
                ],
                curves_unavailable=shapes.unavailable,
            )
        )
    if budget is not None:
        message.largest_gpu_gb = budget.largest_gpu_gb
        message.budget_gpus = budget.budget_gpus
        message.budget_demands.extend(
            scheduling_pb2.BudgetDemand(model=d.model, priority=d.priority, replicas=d.replicas, gpus_per_replica=d.gpus_per_replica) for d in budget.others
        )
    return message


def curves_read(message: scheduling_pb2.DecisionInputs) -> set[tuple[str, float]]:
    """The capacity curves a recorded decision read, by (key, calibration): what `recompute` needs."""
    needed = {(message.capacity_key, message.capacity_calibration or 1.0)} if message.capacity_key else set()
    needed |= {(c.capacity_key, c.capacity_calibration or 1.0) for c in message.vertical.candidates if c.capacity_key}
    return needed


def _load(message: scheduling_pb2.DecisionInputs) -> LoadView:
    forecast = None
    if message.forecast or message.forecast_untrusted_reason:
        forecast = ForecastView(
            -message.forecast_age_s,
            message.forecast_step_s,
            {round(q.quantile, 4): tuple(q.arrival_rps) for q in message.forecast},
            untrusted_reason=message.forecast_untrusted_reason,
        )
    return LoadView(
        message.fresh, message.in_flight, message.arrival_rps, message.load_reason, forecast,
        # Decisions recorded before the field existed read 0 there; panic cannot have engaged on a burst of 0.
        burst_in_flight=message.burst_in_flight if message.HasField("burst_in_flight") else -1.0, idle_s=message.idle_s,
        recent_peak_rps=message.recent_peak_rps if message.HasField("recent_peak_rps") else -1.0,
    )


def shape_inputs(message: scheduling_pb2.DecisionInputs, policy: ModelPolicy, curves: Curves) -> ShapeInputs:
    """The recorded vertical choice's inputs; `policy` is the recorded one (with the shape chosen)."""
    vertical = message.vertical
    return ShapeInputs(
        policy=replace(policy, instances_per_replica=vertical.instances_per_replica, max_batch_size=vertical.max_batch_size),
        in_force=Shape(vertical.in_force_instances, vertical.in_force_max_batch_size),
        candidates=tuple(
            ShapeCurves(
                Shape(c.instances_per_replica, c.max_batch_size),
                c.capacity_key,
                curves.get((c.capacity_key, c.capacity_calibration or 1.0)) if c.capacity_key else None,
            )
            for c in vertical.candidates
        ),
        unavailable=vertical.curves_unavailable,
        largest_gpu_gb=message.largest_gpu_gb,
    )


def budget_inputs(message: scheduling_pb2.DecisionInputs) -> BudgetInputs:
    others = tuple(Demand(d.model, d.priority, d.replicas, d.gpus_per_replica) for d in message.budget_demands)
    return BudgetInputs(message.budget_gpus, others, message.largest_gpu_gb)


def decision_inputs(message: scheduling_pb2.DecisionInputs, policy: ModelPolicy, curves: Curves) -> DecisionInputs:
    """`decide`'s inputs as recorded (at now = 0), the vertical choice and the budget's share made again from
    theirs where they were recorded (else their note and cap taken as they are)."""
    load = _load(message)
    capacity = curves.get((message.capacity_key, message.capacity_calibration or 1.0)) if message.capacity_key else None
    state = ScalingState(
        tuple((-age, r) for age, r in zip(message.prior_ages_s, message.prior_recommendations)), message.prior_time_in_system_s, message.prior_panic_left_s
    )
    inputs = DecisionInputs(
        load=load, policy=policy, state=state, now_s=0.0, capacity=capacity,
        budget=(message.budget_cap, message.budget_note) if message.budgeted else None,
        **{name: getattr(message, field) for name, field in _SAME_NAMED},  # type: ignore[arg-type]
    )
    if message.HasField("vertical"):
        shaped, note = choose_vertical(shape_inputs(message, policy, curves), load, message.lead_s, 0.0)
        inputs = replace(inputs, policy=shaped, vertical_note=note)
    if message.budget_gpus > 0:
        inputs = replace(inputs, budget=budget_for(budget_inputs(message), inputs.policy))
    return inputs


def recompute(message: scheduling_pb2.DecisionInputs, policy: ModelPolicy, curves: Curves | None = None) -> Decision:
    """The decision the same steps make for these inputs (at now = 0), with the capacity curves they name
    (`curves_read`, read by the caller)."""
    if message.initial:
        return initial_decision(policy)
    decision, _ = decide(decision_inputs(message, policy, curves or {}))
    return decision
