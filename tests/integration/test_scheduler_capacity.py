"""SLO sizing in the live scheduler, against the real nats-server: curves are measured for the model's own latency
profile in a worker process, stored in the `capacity` bucket, reused after a restart, and a decision sized on them
recomputes to itself from the stored copy."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from ebbflow.policy import ModelPolicy, policy_from_proto
from ebbflow.runtime import subjects
from ebbflow.runtime.config import SchedulerConfig
from ebbflow.runtime.triton import default_model_repository, publish_model_configs
from ebbflow.scheduler.capacity import Shape
from ebbflow.scheduler.curves import read_stored
from ebbflow.scheduler.explain import curves_read, recompute
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
from ebbflow.v1 import load_pb2
from tests.conftest import wait_for
from tests.integration.conftest import SchedulerBed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RPS = 6.0


async def start(bed: SchedulerBed, policy: ModelPolicy) -> list:
    """The repository's model configs and the policy in place, snapshots at RPS fed; the decisions to come."""
    await publish_model_configs(bed.bus.models, default_model_repository())
    await bed.put_policies(policy)
    await wait_for(lambda: "llm" in bed.view.model_configs, 5, "the model config in the view")
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    snapshot = load_pb2.LoadSnapshot(model="llm", status=load_pb2.DATA_STATUS_FRESH, in_flight=0.5, arrival_rps=RPS, window_s=0.2)
    bed.feed(lambda: [snapshot])
    return decisions


def scheduler_for(bed: SchedulerBed) -> Scheduler:
    return Scheduler(SchedulerConfig(interval_s=0.2), bed.bus, bed.view, SchedulerMetrics(CollectorRegistry()))


async def test_a_model_with_an_slo_is_sized_on_curves_measured_for_it_and_stored(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    policy = ModelPolicy(model="llm", max_replicas=60, slo_ttft_s=2.0, slo_percentile=99, forecast_quantile=0, panic_threshold=0)
    decisions = await start(bed, policy)
    scheduler = scheduler_for(bed)
    stop, task = bed.run(scheduler)

    sized = lambda: [d for d in decisions if d.inputs.capacity_key]  # noqa: E731
    await wait_for(lambda: sized(), 60, "a decision sized on measured curves")
    early = [d for d in decisions if not d.inputs.capacity_key and not d.inputs.initial]
    assert all("being measured" in d.desired.reason for d in early), [d.desired.reason for d in early]
    decision = sized()[0]
    capacity = await read_stored(bed.bus.capacity, decision.inputs.capacity_key)
    assert capacity is not None and capacity.slo.ttft_s == 2.0
    expected = capacity.replicas_for(RPS)
    # At 6 req/s the SLO, not throughput, sets the count: more replicas than full batches would need.
    assert decision.desired.horizontal.replicas == expected > RPS / capacity.max_rps
    assert "capacity curve" in decision.desired.reason and "p99 TTFT <= 2 s" in decision.desired.reason
    again = recompute(decision.inputs, policy_from_proto(decision.inputs.policy), {(decision.inputs.capacity_key, 1.0): capacity})
    assert (again.replicas, again.reason) == (decision.desired.horizontal.replicas, decision.desired.reason)

    # A restarted scheduler reads the stored curves instead of measuring them again.
    stop.set()
    await task
    spec, _ = scheduler.curve_spec("llm", scheduler.resolved("llm", policy))
    assert spec is not None and spec.key == decision.inputs.capacity_key
    scheduler = scheduler_for(bed)
    bed.run(scheduler)
    await asyncio.sleep(0.5)
    model, note = scheduler.capacity.get(spec)
    assert model is not None, note


async def test_vertical_auto_picks_the_shape_that_needs_the_fewest_gpus_for_the_demand(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    policy = ModelPolicy(
        model="llm", max_replicas=60, slo_ttft_s=2.0, forecast_quantile=0, panic_threshold=0,
        vertical_auto=True, vertical_max_instances=2, vertical_max_batch_size=8,
    )
    decisions = await start(bed, policy)
    scheduler = scheduler_for(bed)
    bed.run(scheduler)

    chosen = lambda: [d for d in decisions if "vertical: " in d.desired.reason and "measured" not in d.desired.reason]  # noqa: E731
    await wait_for(chosen, 90, "a decision with every shape's curves measured")
    decision = chosen()[-1]
    shape = Shape(decision.desired.vertical.instances_per_replica, decision.desired.vertical.max_batch_size)
    assert decision.inputs.policy.instances_per_replica == shape.instances and decision.inputs.policy.max_batch_size == shape.max_batch
    costs = {}
    for instances in (1, 2):
        for batch in (1, 2, 4, 8):
            spec, _ = scheduler.curve_spec("llm", scheduler.resolved("llm", ModelPolicy(model="llm", slo_ttft_s=2.0, instances_per_replica=instances, max_batch_size=batch)))
            model = await read_stored(bed.bus.capacity, spec.key)
            costs[Shape(instances, batch)] = model.replicas_for(RPS)  # a replica is a whole GPU here
    # The rate asks for the chosen shape's count (the replicas in force wait for the scale-down delay).
    assert costs[shape] == min(costs.values()) == decision.inputs.reactive_replicas, costs
    assert costs[Shape(1, 1)] > costs[shape], f"the emulator's curves make a bigger shape cheaper at {RPS} rps: {costs}"
    # What the shape was chosen from is recorded: explain reads every candidate's curves and chooses again.
    changed = [d for d in chosen() if (d.desired.vertical.instances_per_replica, d.desired.vertical.max_batch_size) != (1, 8)]
    assert changed, "the chosen shape differs from the model's config (1 instance x batch 8)"
    recorded = changed[0].inputs
    assert recorded.HasField("vertical") and len(recorded.vertical.candidates) == 8 and all(c.capacity_key for c in recorded.vertical.candidates)
    assert (recorded.vertical.instances_per_replica, recorded.vertical.max_batch_size) == (1, 8)
    curves = {key: await read_stored(bed.bus.capacity, *key) for key in curves_read(recorded)}
    again = recompute(recorded, policy_from_proto(recorded.policy), curves)
    assert (again.replicas, again.reason) == (changed[0].desired.horizontal.replicas, changed[0].desired.reason)
    explained = await bed.explain(scheduler, "llm", changed[0].generation)
    assert explained.matches and explained.decision.generation == changed[0].generation, explained.recomputed_reason
