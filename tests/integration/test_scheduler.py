"""The scheduler against the real nats-server: a restart mid-run changes nothing by itself and loses or repeats no
decision; a GPU budget is shared by priority; the routers' push triggers panic; `explain` without a generation says why
a model has what it has now, a hold or a no-change included."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from prometheus_client import CollectorRegistry

from ebbflow.policy import ModelPolicy, policy_from_proto
from ebbflow.runtime import subjects
from ebbflow.runtime.config import PlacementConfig, SchedulerConfig
from ebbflow.scheduler.explain import recompute
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
from ebbflow.v1 import forecast_pb2, load_pb2, scheduling_pb2
from tests.conftest import wait_for
from tests.integration.conftest import SchedulerBed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def fresh(model: str, in_flight: float, arrival_rps: float) -> load_pb2.LoadSnapshot:
    return load_pb2.LoadSnapshot(model=model, status=load_pb2.DATA_STATUS_FRESH, in_flight=in_flight, arrival_rps=arrival_rps)


async def poll(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """wait_for with an async condition (a gRPC call)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def scheduler_for(bed: SchedulerBed, config: SchedulerConfig, **settings: object) -> Scheduler:
    return Scheduler(config, bed.bus, bed.view, SchedulerMetrics(CollectorRegistry()), **settings)  # type: ignore[arg-type]


async def test_a_restarted_scheduler_resumes_without_spurious_changes_and_generations_stay_contiguous(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    # No tolerance: the windowed in-flight climbs through 7 replicas (28 in flight) on its way to 30, where HPA's
    # 10 % would rightly hold 7.
    policy = ModelPolicy(model="llm", max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=30, forecast_quantile=0, scale_tolerance=0)
    await bed.put_policies(policy)
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    load = {"in_flight": 10.0}
    bed.feed(lambda: [fresh("llm", load["in_flight"], 20.0)])  # what the collector would publish every 0.2 s

    # A one-second load window: this test is about restarts, not about how fast a 30 s mean follows a step. The
    # killed scheduler's lease is left to expire (a restart in one process cannot tell its predecessor is dead, as
    # a restarted `ebbflow up` can by its pid): a short lease keeps the restart prompt.
    config = SchedulerConfig(interval_s=0.2, load_window_s=1.0, lease_s=0.5, lease_renew_s=0.25)
    _, task = bed.run(scheduler_for(bed, config))
    await wait_for(lambda: any(d.desired.horizontal.replicas == 3 for d in decisions), 10, "10 in flight -> 3 replicas")
    task.cancel()  # killed mid-run, no clean shutdown
    await asyncio.gather(task, return_exceptions=True)
    load["in_flight"] = 2.0  # the load drops while no scheduler runs
    bed.run(scheduler_for(bed, config))
    await asyncio.sleep(3.0)  # 15 ticks of the new scheduler
    assert [d.desired.horizontal.replicas for d in decisions] == [1, 3], "a restart must not scale down before the delay"
    load["in_flight"] = 30.0
    await wait_for(lambda: decisions[-1].desired.horizontal.replicas == 8, 10, f"30 in flight -> 8 replicas; decided {[(d.desired.horizontal.replicas, d.desired.reason) for d in decisions]}")
    entry = await bed.bus.desired.get("llm")
    generations = [d.generation for d in decisions]
    assert generations == list(range(1, len(generations) + 1)) and entry.revision == generations[-1], generations
    assert [d.previous_replicas for d in decisions[1:]] == [d.desired.horizontal.replicas for d in decisions[:-1]]


async def test_under_a_gpu_budget_the_lower_priority_model_gives_way_and_its_decision_says_so(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    common = dict(min_replicas=1, max_replicas=4, target_in_flight_per_replica=4, scale_down_delay_s=30, forecast_quantile=0, panic_threshold=0)
    await bed.put_policies(*(ModelPolicy(model=model, priority=priority, slo_latency_s=0.25, **common) for model, priority in (("chat", 10), ("batch", 0))))  # type: ignore[arg-type]
    found = await bed.decisions(f"{subjects.DECISIONS}.>")
    load = {"chat": 4.0, "batch": 8.0}
    bed.feed(lambda: [fresh(model, in_flight, in_flight) for model, in_flight in load.items()])
    registry = CollectorRegistry()
    scheduler = Scheduler(SchedulerConfig(interval_s=0.2), bed.bus, bed.view, SchedulerMetrics(registry), placement=PlacementConfig(nodes=("a:2x80",)))
    bed.run(scheduler)

    def latest(model: str) -> int | None:
        mine = [d for d in found if d.model == model]
        return mine[-1].desired.horizontal.replicas if mine else None

    await asyncio.sleep(2.0)
    assert (latest("chat"), latest("batch")) == (1, 1), "2 GPUs: chat takes 1, batch wants 2 and gets the other"
    load["chat"] = 8.0  # chat now wants both GPUs
    await wait_for(lambda: (latest("chat"), latest("batch")) == (2, 0), 10, "batch giving way to chat")
    last = [d for d in found if d.model == "batch"][-1]
    assert "GPU budget caps it at 0 of 2" in last.desired.reason and "chat 2x1" in last.desired.reason
    assert last.inputs.budgeted and last.inputs.budget_cap == 0
    # What the EbbflowGPUBudgetCapping alert compares: wanted before the cap against desired after it.
    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    await wait_for(lambda: sample("ebbflow_scheduler_demand_replicas", model="batch") == 2, 5, "batch's demand before the cap")
    assert sample("ebbflow_scheduler_desired_replicas", model="batch") == 0 and sample("ebbflow_scheduler_gpu_budget") == 2
    assert sample("ebbflow_scheduler_desired_gpus", model="chat") == 2 and sample("ebbflow_policy_slo_latency_seconds", model="chat") == 0.25
    assert sample("ebbflow_policy_slo_share", model="chat") == 0.99 and (sample("ebbflow_scheduler_lead_seconds", model="chat") or 0) > 0
    # The share-out's own inputs are recorded, so explain shares the budget out again rather than copy the cap.
    assert last.inputs.budget_gpus == 2 and [(d.model, d.priority, d.replicas) for d in last.inputs.budget_demands] == [("chat", 10, 2)]
    again = recompute(last.inputs, policy_from_proto(last.inputs.policy))
    assert (again.replicas, again.reason) == (0, last.desired.reason)
    explained = await bed.explain(scheduler, "batch", last.generation)
    assert explained.matches and explained.recomputed_replicas == 0, explained.recomputed_reason
    load["chat"] = 4.0  # chat needs one again: batch gets its GPU back (chat's scale-down waits for its delay)
    await asyncio.sleep(1.0)
    assert latest("batch") == 0, "the room frees only when chat actually gives its replica up"


async def test_the_routers_in_flight_push_triggers_panic_before_the_next_snapshot(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    await bed.put_policies(ModelPolicy(model="llm", max_replicas=8, target_in_flight_per_replica=4, forecast_quantile=0))
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    # A 60 s tick: only the snapshot and the push can trigger a decision within this test.
    bed.run(scheduler_for(bed, SchedulerConfig(interval_s=60)))
    await asyncio.sleep(0.3)
    await bed.bus.nc.publish(subjects.load_subject("llm"), fresh("llm", 2.0, 4.0).SerializeToString())
    await wait_for(lambda: len(decisions) >= 1, 5, "the initial decision")
    await asyncio.sleep(0.3)
    assert [d.desired.horizontal.replicas for d in decisions] == [1]
    pushed = asyncio.get_running_loop().time()
    for router in ("router-a", "router-b"):  # two routers, 10 in flight each: 20 -> 5 replicas
        telemetry = load_pb2.RouterTelemetry(router_id=router, window_s=1.0, models=[load_pb2.ModelTelemetry(model="llm", in_flight_avg=10.0, arrivals=20)])
        await bed.bus.nc.publish(subjects.ROUTER_TELEMETRY, telemetry.SerializeToString())
    await wait_for(lambda: decisions[-1].desired.horizontal.replicas == 5, 5, "panic on the routers' push")
    assert asyncio.get_running_loop().time() - pushed < 1.0, "decided on the push, not on a later snapshot or tick"
    last = decisions[-1]
    assert last.desired.reason.startswith("panic: in_flight 20.00 needs 5 replicas") and last.inputs.burst_in_flight == 20.0
    again = recompute(last.inputs, policy_from_proto(last.inputs.policy))
    assert (again.replicas, again.reason) == (5, last.desired.reason)


async def test_explain_without_a_generation_says_why_the_model_has_what_it_has_now(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    policy = ModelPolicy(model="llm", max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=600, forecast_quantile=0, panic_threshold=0)
    await bed.put_policies(policy)
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    load = {"in_flight": 10.0, "feeding": True}
    bed.feed(lambda: [fresh("llm", load["in_flight"], 20.0)] if load["feeding"] else [])
    scheduler = scheduler_for(bed, SchedulerConfig(interval_s=0.2, load_window_s=2.0, stale_after_s=2.0))
    bed.run(scheduler)
    async with bed.api(scheduler) as stub:

        async def explain(generation: int = 0) -> scheduling_pb2.ExplainResponse:
            return await stub.Explain(scheduling_pb2.ExplainRequest(model="llm", generation=generation), timeout=5.0)

        await wait_for(lambda: [d.desired.horizontal.replicas for d in decisions] == [1, 3], 10, "10 in flight -> 3 replicas")
        load["in_flight"] = 2.0  # needs 1; the 600 s scale-down delay holds 3 and no decision is recorded
        reply: list[scheduling_pb2.ExplainResponse] = []

        async def waiting() -> bool:
            reply[:] = [await explain()]
            return reply[0].decision.desired.reason.startswith("waiting to scale down: 1 recommended")

        await poll(waiting, 15, "an evaluation that holds 3 while 1 is recommended")
        now = reply[0]
        assert now.evaluation and now.matches, now.recomputed_reason
        assert now.decision.generation == decisions[-1].generation and now.decision.previous_replicas == 3
        assert now.decision.desired.horizontal.replicas == 3 and now.recomputed_replicas == 3
        assert "held for the 600 s delay (in_flight " in now.decision.desired.reason and "/ in_flight_target 4 -> 1)" in now.decision.desired.reason
        assert [d.desired.horizontal.replicas for d in decisions] == [1, 3], "no change was recorded meanwhile"
        recorded = await explain(decisions[-1].generation)  # a recorded change is still explained as recorded
        assert not recorded.evaluation and recorded.matches and recorded.decision.desired.horizontal.replicas == 3
        load["feeding"] = False  # the collector goes silent: the scheduler holds, and says why

        async def holding() -> bool:
            reply[:] = [await explain()]
            return reply[0].decision.desired.reason.startswith("hold: no load snapshot from the collector")

        await poll(holding, 15, "a hold on stale load")
        assert reply[0].evaluation and reply[0].matches and reply[0].decision.desired.horizontal.replicas == 3
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Explain(scheduling_pb2.ExplainRequest(model="nope"), timeout=5.0)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_scheduler_restarted_under_load_warms_up_before_it_trusts_the_forecast_or_scales_down(scheduler_bed: SchedulerBed) -> None:
    """The live fault: after a restart of the stack the routers hold every request through the replicas' cold
    start, so the first load window's time in system is ~100x the real one, and the refilled forecaster is trusted at
    once; its p90 through that time in system took 4 replicas to the maximum. Restarted here against nats-server,
    with the forecast published as the forecaster does."""
    bed = scheduler_bed
    policy = ModelPolicy(model="llm", max_replicas=8, target_in_flight_per_replica=2, scale_down_delay_s=5, panic_threshold=0)
    await bed.put_policies(policy)
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    load = {"in_flight": 7.8, "arrival_rps": 150.0, "ready": 4}
    bed.feed(lambda: [load_pb2.LoadSnapshot(model="llm", status=load_pb2.DATA_STATUS_FRESH, ready_replicas=load["ready"], in_flight=load["in_flight"], arrival_rps=load["arrival_rps"])])
    config = SchedulerConfig(interval_s=0.2, load_window_s=2.0, min_forecast_observations=30, lease_s=0.5, lease_renew_s=0.25)  # short: the killed one's lease expires
    _, first = bed.run(scheduler_for(bed, config))
    await wait_for(lambda: decisions and decisions[-1].desired.horizontal.replicas == 4, 15, "7.8 in flight -> 4 replicas")
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    before = len(decisions)

    # The stack comes back: 6 requests held, almost nothing arriving, no replica ready; a trusted forecast refilled.
    load.update(in_flight=6.0, arrival_rps=0.5, ready=0)
    stop_forecasts = asyncio.Event()

    async def forecaster() -> None:
        while not stop_forecasts.is_set():
            message = forecast_pb2.Forecast(model="llm", issued_at_unix_s=time.time(), step_s=2.0, observations=120, method="hedge")
            for level, rate in ((0.5, 150.0), (0.9, 200.0), (0.99, 260.0)):
                message.quantiles.add(quantile=level, arrival_rps=[rate] * 12)
            await bed.bus.nc.publish(subjects.forecast_subject("llm"), message.SerializeToString())
            await asyncio.sleep(0.2)

    forecasts = asyncio.create_task(forecaster())
    try:
        scheduler = scheduler_for(bed, config)
        bed.run(scheduler)
        await wait_for(lambda: "llm" in scheduler.evaluations, 10, "the restarted scheduler's first evaluation")
        await asyncio.sleep(1.5)  # the cold start: requests held
        held = scheduler.evaluations["llm"].desired.reason
        load.update(in_flight=5.8, arrival_rps=150.0, ready=4)  # served: 0.039 s in system; p90 200 -> 7.7 in flight -> 4
        await wait_for(lambda: "forecast p90 200.00" in scheduler.evaluations["llm"].desired.reason, 15, "the forecast acted on after the warm-up")
        steady = scheduler.evaluations["llm"].desired.reason
        await asyncio.sleep(6.0)  # past the 5 s scale-down delay after the warm-up
    finally:
        stop_forecasts.set()
        await forecasts
    after = [(d.desired.horizontal.replicas, d.desired.reason) for d in decisions[before:]]
    assert after == [], f"a restart under steady load changed nothing; it decided {after} (steady: {steady})"
    assert "forecast not trusted: warming up: scheduler restarted" in held, held
    assert scheduler.evaluations["llm"].desired.horizontal.replicas == 4, scheduler.evaluations["llm"].desired.reason
