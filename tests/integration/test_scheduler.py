"""The scheduler against the real nats-server: a restart mid-run changes nothing by itself and loses or repeats no decision."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from ebbflow.runtime import subjects
from ebbflow.runtime.bus import connect
from ebbflow.runtime.config import ModelPolicy, SchedulerConfig
from ebbflow.runtime.registry import RegistryView
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics, policy_to_proto
from ebbflow.v1 import load_pb2, scheduling_pb2
from tests.conftest import wait_for
from tests.integration.conftest import reset_jetstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_a_restarted_scheduler_resumes_without_spurious_changes_and_generations_stay_contiguous(nats_url: str) -> None:
    await reset_jetstream(nats_url)
    bus = await connect(nats_url, name="scheduler-restart-test")
    view, stop_view = RegistryView(), asyncio.Event()
    watcher = asyncio.create_task(view.run(bus, stop_view))
    await view.wait_loaded(10)
    policy = ModelPolicy(model="llm", max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=30, forecast_quantile=0)
    await bus.policies.put("llm", policy_to_proto(policy).SerializeToString())
    await wait_for(lambda: "llm" in view.policies, 5, "the policy in the view")
    decisions: list[scheduling_pb2.ScalingDecision] = []

    async def on_decision(msg) -> None:  # type: ignore[no-untyped-def]
        decisions.append(scheduling_pb2.ScalingDecision.FromString(msg.data))

    subscription = await bus.nc.subscribe(subjects.decision_subject("llm"), cb=on_decision)
    load = {"in_flight": 10.0}
    feeding = asyncio.Event()

    async def collector() -> None:  # what the collector would publish every 0.2 s
        while not feeding.is_set():
            snapshot = load_pb2.LoadSnapshot(model="llm", status=load_pb2.DATA_STATUS_FRESH, in_flight=load["in_flight"], arrival_rps=20.0)
            await bus.nc.publish(subjects.load_subject("llm"), snapshot.SerializeToString())
            await asyncio.sleep(0.2)

    def start() -> tuple[asyncio.Event, asyncio.Task]:
        stop = asyncio.Event()
        scheduler = Scheduler(SchedulerConfig(interval_s=0.2), bus, view, SchedulerMetrics(CollectorRegistry()))
        return stop, asyncio.create_task(scheduler.run(stop))

    feeder = asyncio.create_task(collector())
    stop, task = start()
    try:
        await wait_for(lambda: any(d.desired.horizontal.replicas == 3 for d in decisions), 10, "10 in flight -> 3 replicas")
        task.cancel()  # killed mid-run, no clean shutdown
        await asyncio.gather(task, return_exceptions=True)
        load["in_flight"] = 2.0  # the load drops while no scheduler runs
        stop, task = start()
        await asyncio.sleep(3.0)  # 15 ticks of the new scheduler
        assert [d.desired.horizontal.replicas for d in decisions] == [1, 3], "a restart must not scale down before the delay"
        load["in_flight"] = 30.0
        await wait_for(lambda: decisions[-1].desired.horizontal.replicas == 8, 10, "30 in flight -> 8 replicas")
        entry = await bus.desired.get("llm")
        generations = [d.generation for d in decisions]
        assert generations == list(range(1, len(generations) + 1)) and entry.revision == generations[-1], generations
        assert [d.previous_replicas for d in decisions[1:]] == [d.desired.horizontal.replicas for d in decisions[:-1]]
    finally:
        feeding.set()
        stop.set()
        await asyncio.gather(task, feeder, return_exceptions=True)
        await subscription.unsubscribe()
        stop_view.set()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()


async def test_under_a_gpu_budget_the_lower_priority_model_gives_way_and_its_decision_says_so(nats_url: str) -> None:
    from ebbflow.runtime.config import PlacementConfig

    await reset_jetstream(nats_url)
    bus = await connect(nats_url, name="scheduler-budget-test")
    view, stop_view = RegistryView(), asyncio.Event()
    watcher = asyncio.create_task(view.run(bus, stop_view))
    await view.wait_loaded(10)
    common = dict(min_replicas=1, max_replicas=4, target_in_flight_per_replica=4, scale_down_delay_s=30, forecast_quantile=0, panic_threshold=0)
    for model, priority in (("chat", 10), ("batch", 0)):
        await bus.policies.put(model, policy_to_proto(ModelPolicy(model=model, priority=priority, **common)).SerializeToString())  # type: ignore[arg-type]
    await wait_for(lambda: {"chat", "batch"} <= set(view.policies), 5, "both policies in the view")
    decisions: dict[str, list[scheduling_pb2.ScalingDecision]] = {"chat": [], "batch": []}

    async def on_decision(msg) -> None:  # type: ignore[no-untyped-def]
        decision = scheduling_pb2.ScalingDecision.FromString(msg.data)
        decisions[decision.model].append(decision)

    subscription = await bus.nc.subscribe(f"{subjects.DECISIONS}.>", cb=on_decision)
    load = {"chat": 4.0, "batch": 8.0}
    feeding = asyncio.Event()

    async def collector() -> None:
        while not feeding.is_set():
            for model, in_flight in load.items():
                snapshot = load_pb2.LoadSnapshot(model=model, status=load_pb2.DATA_STATUS_FRESH, in_flight=in_flight, arrival_rps=in_flight)
                await bus.nc.publish(subjects.load_subject(model), snapshot.SerializeToString())
            await asyncio.sleep(0.2)

    stop = asyncio.Event()
    scheduler = Scheduler(SchedulerConfig(interval_s=0.2), bus, view, SchedulerMetrics(CollectorRegistry()), placement=PlacementConfig(nodes=("a:2x80",)))
    feeder = asyncio.create_task(collector())
    task = asyncio.create_task(scheduler.run(stop))
    try:
        latest = lambda model: decisions[model][-1].desired.horizontal.replicas if decisions[model] else None  # noqa: E731
        await asyncio.sleep(2.0)
        assert (latest("chat"), latest("batch")) == (1, 1), "2 GPUs: chat takes 1, batch wants 2 and gets the other"
        load["chat"] = 8.0  # chat now wants both GPUs
        await wait_for(lambda: (latest("chat"), latest("batch")) == (2, 0), 10, "batch giving way to chat")
        last = decisions["batch"][-1]
        assert "GPU budget caps it at 0 of 2" in last.desired.reason and "chat 2x1" in last.desired.reason
        assert last.inputs.budgeted and last.inputs.budget_cap == 0
        from ebbflow.scheduler.explain import recompute
        from ebbflow.scheduler.service import policy_from_proto

        again = recompute(last.inputs, policy_from_proto(last.inputs.policy))
        assert (again.replicas, again.reason) == (0, last.desired.reason)
        load["chat"] = 4.0  # chat needs one again: batch gets its GPU back (chat's scale-down waits for its delay)
        await asyncio.sleep(1.0)
        assert latest("batch") == 0, "the room frees only when chat actually gives its replica up"
    finally:
        feeding.set()
        stop.set()
        await asyncio.gather(task, feeder, return_exceptions=True)
        await subscription.unsubscribe()
        stop_view.set()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()


async def test_the_routers_in_flight_push_triggers_panic_before_the_next_snapshot(nats_url: str) -> None:
    from ebbflow.scheduler.explain import recompute
    from ebbflow.scheduler.service import policy_from_proto

    await reset_jetstream(nats_url)
    bus = await connect(nats_url, name="scheduler-push-test")
    view, stop_view = RegistryView(), asyncio.Event()
    watcher = asyncio.create_task(view.run(bus, stop_view))
    await view.wait_loaded(10)
    policy = ModelPolicy(model="llm", max_replicas=8, target_in_flight_per_replica=4, forecast_quantile=0)
    await bus.policies.put("llm", policy_to_proto(policy).SerializeToString())
    await wait_for(lambda: "llm" in view.policies, 5, "the policy in the view")
    decisions: list[scheduling_pb2.ScalingDecision] = []

    async def on_decision(msg) -> None:  # type: ignore[no-untyped-def]
        decisions.append(scheduling_pb2.ScalingDecision.FromString(msg.data))

    subscription = await bus.nc.subscribe(subjects.decision_subject("llm"), cb=on_decision)
    stop = asyncio.Event()
    # A 60 s tick: only the snapshot and the push can trigger a decision within this test.
    scheduler = Scheduler(SchedulerConfig(interval_s=60), bus, view, SchedulerMetrics(CollectorRegistry()))
    task = asyncio.create_task(scheduler.run(stop))
    try:
        await asyncio.sleep(0.3)
        snapshot = load_pb2.LoadSnapshot(model="llm", status=load_pb2.DATA_STATUS_FRESH, in_flight=2.0, arrival_rps=4.0)
        await bus.nc.publish(subjects.load_subject("llm"), snapshot.SerializeToString())
        await wait_for(lambda: len(decisions) >= 1, 5, "the initial decision")
        await asyncio.sleep(0.3)
        assert [d.desired.horizontal.replicas for d in decisions] == [1]
        pushed = asyncio.get_running_loop().time()
        for router in ("router-a", "router-b"):  # two routers, 10 in flight each: 20 -> 5 replicas
            telemetry = load_pb2.RouterTelemetry(router_id=router, window_s=1.0, models=[load_pb2.ModelTelemetry(model="llm", in_flight_avg=10.0, arrivals=20)])
            await bus.nc.publish(subjects.ROUTER_TELEMETRY, telemetry.SerializeToString())
        await wait_for(lambda: decisions[-1].desired.horizontal.replicas == 5, 5, "panic on the routers' push")
        assert asyncio.get_running_loop().time() - pushed < 1.0, "decided on the push, not on a later snapshot or tick"
        last = decisions[-1]
        assert last.desired.reason.startswith("panic: in_flight 20.00 needs 5 replicas") and last.inputs.burst_in_flight == 20.0
        again = recompute(last.inputs, policy_from_proto(last.inputs.policy))
        assert (again.replicas, again.reason) == (5, last.desired.reason)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await subscription.unsubscribe()
        stop_view.set()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()
