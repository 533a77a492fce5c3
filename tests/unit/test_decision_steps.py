"""A decision's three pure steps, vertical_auto's shape, the GPU budget's share and the rule, recorded together and
made again from the record: `explain` reproduces a decision that changed the shape and was capped by the budget."""

import ast
from dataclasses import replace
from pathlib import Path

from ebbflow.policy import ModelPolicy, policy_from_proto
from ebbflow.scheduler.budget import BudgetInputs, Demand, budget_for, gpus_per_replica
from ebbflow.scheduler.capacity import CapacityModel, Curve, Curves, Shape, Slo
from ebbflow.scheduler.core import DecisionInputs, ForecastView, LoadView, ScalingState, decide
from ebbflow.scheduler.explain import curves_read, decision_inputs, record_inputs, recompute
from ebbflow.scheduler.vertical import ShapeCurves, ShapeInputs, candidate_shapes, choose_vertical

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "ebbflow"
NOW, LEAD = 1000.0, 33.0
POLICY = ModelPolicy(
    model="batch", max_replicas=20, max_batch_size=8, slo_ttft_s=2.0, panic_threshold=0, vertical_auto=True,
    vertical_max_instances=2, vertical_max_batch_size=4, gpu_memory_gb_per_instance=20.0,
).validate()


def flat_model(rate_at_slo: float, shape: Shape) -> CapacityModel:
    """Every pool meets the SLO up to `rate_at_slo` req/s per replica."""
    rates = (rate_at_slo / 2, rate_at_slo, rate_at_slo * 1.5)
    curve = lambda pool: Curve(pool, rates, (1.0, 0.99, 0.5), ((0.1,) * 6,) * 3, (0.5, 1.0, 3.0))  # noqa: E731
    return CapacityModel(Curves(shape, Slo(ttft_s=2.0, percentile=99.0), (curve(1), curve(32)), rate_at_slo * 2))


def candidates() -> tuple[ShapeCurves, ...]:
    # A second instance more than doubles a replica's rate, a bigger batch adds less; an instance costs a quarter GPU.
    return tuple(ShapeCurves(s, f"key-{s.instances}x{s.max_batch}", flat_model(s.instances**2 * (1 + s.max_batch / 4), s)) for s in candidate_shapes(POLICY))


def decided(shapes: ShapeInputs, budget: BudgetInputs | None, load: LoadView):  # type: ignore[no-untyped-def]
    """As the scheduler's shell runs the steps (scheduler.service.evaluate)."""
    shaped, note = choose_vertical(shapes, load, LEAD, NOW)
    chosen = next(c for c in shapes.candidates if (c.shape.instances, c.shape.max_batch) == (shaped.instances_per_replica, shaped.max_batch_size))
    state = ScalingState(((NOW - 20.0, 2), (NOW - 5.0, 2)), 0.4)
    given = DecisionInputs(
        load, shaped, state, 2, NOW, lead_s=LEAD, capacity=chosen.model, capacity_key=chosen.key,
        budget=budget_for(budget, shaped) if budget is not None else None, vertical_note=note,
    )
    decision, _ = decide(given)
    return shaped, decision, record_inputs(given, decision, shapes, budget)


def curves_of(shapes: ShapeInputs) -> dict:  # type: ignore[type-arg]
    """What Explain reads from the `capacity` bucket: every curve the record names."""
    return {(c.key, 1.0): c.model for c in shapes.candidates}


SHAPES = ShapeInputs(POLICY, Shape(1, 4), candidates(), "", largest_gpu_gb=80.0)
BUDGET = BudgetInputs(3.5, (Demand("chat", 10, 6, 0.5), Demand("embed", 0, 9, 0.25)), largest_gpu_gb=80.0)
SURGE = LoadView(True, 6.0, 9.0, forecast=ForecastView(NOW - 4.0, 10.0, {0.9: (12.0,) * 6}))


def test_a_decision_that_changed_the_shape_under_a_budget_cap_is_reproduced_from_its_record():
    shaped, decision, message = decided(SHAPES, BUDGET, SURGE)
    assert (shaped.instances_per_replica, shaped.max_batch_size) != (1, 4), "the surge changes the shape"
    assert "vertical: 2x" in decision.reason and "GPU budget caps it at" in decision.reason, decision.reason
    assert message.HasField("vertical") and message.budget_gpus == 3.5 and len(message.budget_demands) == 2
    assert curves_read(message) == set(curves_of(SHAPES))
    policy = policy_from_proto(message.policy)
    again = recompute(message, policy, curves_of(SHAPES))
    assert (again.replicas, again.reason) == (decision.replicas, decision.reason)
    rebuilt = decision_inputs(message, policy, curves_of(SHAPES))
    assert rebuilt.policy == shaped and rebuilt.budget == budget_for(BUDGET, shaped)


def test_the_shape_and_the_cap_are_made_again_not_copied():
    _, decision, message = decided(SHAPES, BUDGET, SURGE)
    policy = policy_from_proto(message.policy)
    fewer = type(message)()
    fewer.CopyFrom(message)
    fewer.budget_demands[0].replicas = 0  # chat wanted nothing: more room
    assert recompute(fewer, policy, curves_of(SHAPES)).replicas > decision.replicas
    missing = dict(curves_of(SHAPES))
    missing.pop(("key-1x1", 1.0))  # a curve the record names that was not read: the shape in force is kept
    kept = recompute(message, policy, missing)
    assert "vertical: keeping 1x4 while 1 of 6 shapes' curves are measured" in kept.reason and kept.reason != decision.reason


def test_records_without_the_steps_inputs_take_the_note_and_the_cap_as_they_were_recorded():
    _, decision, message = decided(SHAPES, BUDGET, SURGE)
    older = type(message)()
    older.CopyFrom(message)
    older.ClearField("vertical")
    older.ClearField("budget_gpus")
    older.ClearField("budget_demands")
    older.ClearField("largest_gpu_gb")
    again = recompute(older, policy_from_proto(older.policy), curves_of(SHAPES))
    assert (again.replicas, again.reason) == (decision.replicas, decision.reason)


def test_the_shape_in_force_is_kept_and_recorded_while_curves_are_measured_or_cannot_be():
    measuring = replace(SHAPES, candidates=tuple(replace(c, key="", model=None) if c.shape == Shape(2, 4) else c for c in SHAPES.candidates))
    shaped, decision, message = decided(measuring, None, SURGE)
    assert (shaped.instances_per_replica, shaped.max_batch_size) == (1, 4) and "while 1 of 6" in decision.reason
    assert recompute(message, policy_from_proto(message.policy), curves_of(measuring)).reason == decision.reason
    unknown = ShapeInputs(POLICY, Shape(1, 4), (), "the model's Triton config is not known yet", 80.0)
    _, decision, message = decided_without_curves(unknown)
    assert decision.reason.endswith("; vertical: keeping 1x4: the model's Triton config is not known yet")
    assert recompute(message, policy_from_proto(message.policy), {}).reason == decision.reason


def decided_without_curves(shapes: ShapeInputs):  # type: ignore[no-untyped-def]
    shaped, note = choose_vertical(shapes, SURGE, LEAD, NOW)
    given = DecisionInputs(SURGE, shaped, ScalingState(), 2, NOW, lead_s=LEAD, capacity_note="the model's Triton config is not known yet", vertical_note=note)
    decision, _ = decide(given)
    return shaped, decision, record_inputs(given, decision, shapes)


def test_a_replicas_gpu_cost_follows_its_instances_memory():
    assert gpus_per_replica(0.0, POLICY) == 1.0, "no inventory: a replica per GPU"
    assert gpus_per_replica(80.0, replace(POLICY, instances_per_replica=3)) == 0.75
    assert gpus_per_replica(80.0, replace(POLICY, gpu_memory_gb_per_instance=0.0)) == 1.0, "no size given: a whole GPU"


def test_the_steps_are_pure():
    forbidden = {"asyncio", "grpc", "nats", "prometheus_client", "opentelemetry", "time"}
    for module in ("scheduler/vertical.py", "scheduler/budget.py"):
        imported = set()
        for node in ast.walk(ast.parse((PACKAGE / module).read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & forbidden, f"{module} imports {imported & forbidden}"
