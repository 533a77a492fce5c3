"""The control loop with real parts: load -> router telemetry -> collector -> scheduler -> actuator -> tritonserver."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio

from ebbflow.policy import ModelPolicy, policy_to_proto
from ebbflow.runtime.wire import READY
from ebbflow.v1 import load_pb2, scheduling_pb2
from tests.conftest import expected_output, llm_inputs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROMPT = "one two three four five"


class Clients:
    """Closed-loop clients sending back to back through the router until stopped."""

    def __init__(self, address: str, count: int, max_tokens: int = 40) -> None:
        self.address, self.count, self.max_tokens = address, count, max_tokens
        self.ok = 0
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _one(self) -> None:
        client = triton_aio.InferenceServerClient(self.address)
        try:
            while not self._stop.is_set():
                try:
                    result = await client.infer("llm", llm_inputs(PROMPT, self.max_tokens))
                    assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, self.max_tokens)
                    self.ok += 1
                except Exception as error:
                    self.errors.append(str(error))
        finally:
            await client.close()

    def start(self) -> "Clients":
        self._tasks = [asyncio.create_task(self._one()) for _ in range(self.count)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def desired_replicas(stack, model: str = "llm") -> tuple[int, int]:
    entry = await stack.bus.desired.get(model)
    return scheduling_pb2.DesiredState.FromString(entry.value).horizontal.replicas, entry.revision


async def fresh_snapshots(stack, count: int, min_arrival_rps: float) -> list[load_pb2.LoadSnapshot]:
    """Wait for `count` consecutive fresh LoadSnapshots with load, as the scheduler receives them."""
    seen: list[load_pb2.LoadSnapshot] = []
    done = asyncio.Event()

    async def on_load(msg) -> None:
        snapshot = load_pb2.LoadSnapshot.FromString(msg.data)
        if snapshot.status == load_pb2.DATA_STATUS_FRESH and snapshot.arrival_rps >= min_arrival_rps:
            seen.append(snapshot)
            if len(seen) >= count:
                done.set()

    subscription = await stack.bus.nc.subscribe("ebbflow.load.llm", cb=on_load)
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await subscription.unsubscribe()
    return seen


def served_by_replica(stack) -> dict[str, int]:
    """Successful inferences per ready replica, asked of each tritonserver directly."""
    counts = {}
    for replica in stack.view.ready("llm"):
        client = triton_grpc.InferenceServerClient(f"{replica.host}:{replica.grpc_port}")
        stats = client.get_inference_statistics("llm", as_json=True)
        counts[replica.replica_id] = int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))
        client.close()
    return counts


async def test_load_step_scales_out_and_router_spreads_requests(make_stack):
    stack = await make_stack(ModelPolicy(model="llm", min_replicas=1, max_replicas=3, target_in_flight_per_replica=2, scale_down_delay_s=5))
    address = stack.addresses.router

    # Negative control: one client keeps in_flight <= 1, below one replica's target of 2.
    quiet = Clients(address, 1).start()
    snapshots = await fresh_snapshots(stack, count=6, min_arrival_rps=1.0)
    assert max(s.in_flight for s in snapshots) <= 1.01
    assert await desired_replicas(stack) == (1, 1), "load below one replica's target must not scale out"
    await quiet.stop()
    assert not quiet.errors

    # Load step: 8 clients -> in_flight ~8 -> ceil(8 / 2) = 4, capped at max 3.
    busy = Clients(address, 8).start()
    await wait_for(lambda: (stack.sample("ebbflow_actuator_unready_since_timestamp_seconds", {"model": "llm"}) or 0) > 0, 30, "desired ahead of ready")
    await wait_for(lambda: len(stack.view.ready("llm")) >= 3, 60, "3 ready replicas after the load step")
    await wait_for(lambda: stack.sample("ebbflow_actuator_unready_since_timestamp_seconds", {"model": "llm"}) == 0, 10, "ready meeting desired again")
    replicas_before = served_by_replica(stack)
    await wait_for(lambda: busy.ok > 0, 10, "requests completing")
    target = busy.ok + 150
    await wait_for(lambda: busy.ok >= target, 60, "150 more requests after scale-out")
    await busy.stop()
    after = served_by_replica(stack)
    served_since = {rid: after[rid] - replicas_before.get(rid, 0) for rid in after}
    assert sum(1 for n in served_since.values() if n > 0) >= 3, f"router did not spread requests: {served_since}"
    assert not busy.errors, busy.errors[:3]

    replicas, generation = await desired_replicas(stack)
    assert replicas == 3 and generation >= 2
    decisions = await stack.bus.js.subscribe("ebbflow.decisions.llm", ordered_consumer=True)
    first = scheduling_pb2.ScalingDecision.FromString((await decisions.next_msg(timeout=5)).data)
    assert first.desired.horizontal.replicas == 1 and first.generation == 1
    scale_out = scheduling_pb2.ScalingDecision.FromString((await decisions.next_msg(timeout=5)).data)
    assert scale_out.previous_replicas == 1 and scale_out.desired.horizontal.replicas > 1
    assert "scale up" in scale_out.desired.reason
    await decisions.unsubscribe()


async def test_killed_replica_leaves_the_router_and_is_replaced(make_stack):
    stack = await make_stack(ModelPolicy(model="llm", min_replicas=1, max_replicas=1, target_in_flight_per_replica=4, scale_down_delay_s=5))
    (victim,) = stack.view.ready("llm")
    os.kill(victim.pid, signal.SIGKILL)

    await wait_for(lambda: all(r.replica_id != victim.replica_id for r in stack.view.replicas.values()), 20, "the killed replica to leave the registry")
    await wait_for(lambda: len(stack.view.ready("llm")) == 1, 60, "a replacement replica")
    (replacement,) = stack.view.ready("llm")
    assert replacement.replica_id != victim.replica_id and replacement.state == READY

    client = triton_aio.InferenceServerClient(stack.addresses.router)
    try:
        for n in range(5):
            result = await client.infer("llm", llm_inputs(PROMPT, n + 1))
            assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, n + 1)
    finally:
        await client.close()


async def test_a_vertical_change_under_load_fails_no_request(make_stack):
    """instances_per_replica 1 -> 2 in the policy: the actuator reloads the running replica with a config override."""
    stack = await make_stack(ModelPolicy(model="llm", min_replicas=1, max_replicas=1))
    (entry,) = stack.view.ready("llm")
    assert entry.instances == 1 and entry.max_batch_size == 8  # the repository's config, as loaded
    clients = Clients(stack.addresses.router, 4).start()
    await wait_for(lambda: clients.ok >= 20, 30, "requests flowing before the change")
    await stack.bus.policies.put("llm", policy_to_proto(ModelPolicy(model="llm", min_replicas=1, max_replicas=1, instances_per_replica=2)).SerializeToString())
    await wait_for(lambda: [e.instances for e in stack.view.ready("llm")] == [2], 60, "the replica reloaded with 2 instances")
    before = clients.ok
    await wait_for(lambda: clients.ok >= before + 20, 30, "requests flowing after the change")
    await clients.stop()
    assert not clients.errors, clients.errors[:3]
    (entry,) = stack.view.ready("llm")
    client = triton_grpc.InferenceServerClient(f"{entry.host}:{entry.grpc_port}")
    config = client.get_model_config("llm").config
    client.close()
    assert sum(group.count for group in config.instance_group) == 2 and config.max_batch_size == 8
    desired = scheduling_pb2.DesiredState.FromString((await stack.bus.desired.get("llm")).value)
    assert desired.vertical.instances_per_replica == 2 and desired.horizontal.replicas == 1


async def test_replicas_start_only_on_a_gpu_slot_that_fits_and_the_plan_shows_them(make_stack):
    """Two 80 GB GPUs, 50 GB per replica: the budget (2 GPUs = 3.2 replicas' memory) allows 3, but memory does not
    divide, so two replicas start, one per GPU, and the third is refused with the reason."""
    import grpc

    from ebbflow.runtime.config import PlacementConfig
    from ebbflow.v1 import scheduling_pb2_grpc

    policy = ModelPolicy(model="llm", min_replicas=3, max_replicas=3, gpu_memory_gb_per_instance=50)
    stack = await make_stack(policy, PlacementConfig(nodes=("local:2x80",)))
    await wait_for(lambda: len(stack.view.ready("llm")) == 2 and "llm" in stack.actuator.unplaced, 60, "two replicas on the GPUs, one refused")
    entries = stack.view.of_model("llm")
    assert sorted((e.gpu_slot, e.gpu_memory_gb) for e in entries) == [("local/gpu0", 50.0), ("local/gpu1", 50.0)]
    assert "no GPU has 50 GB free (the most free on one GPU is 30 GB" in stack.actuator.unplaced["llm"]
    await asyncio.sleep(1.5)  # a few more reconcile ticks: still refused, nothing over-committed
    assert len(stack.view.of_model("llm")) == 2
    async with grpc.aio.insecure_channel(stack.addresses.control) as channel:
        plan = await scheduling_pb2_grpc.SchedulerServiceStub(channel).GetPlan(scheduling_pb2.GetPlanRequest())
    (model,) = plan.models
    assert model.desired.horizontal.replicas == 3 and model.desired.vertical.gpu_memory_gb == 50
    assert sorted(r.gpu_slot for r in model.replicas) == ["local/gpu0", "local/gpu1"] and plan.gpus_in_use == 2
    assert plan.nodes == ["local:2x80"] and plan.gpu_budget == 2 and abs(model.gpus_per_replica - 50 / 80) < 1e-9


async def test_a_fragmented_fleet_is_consolidated_by_moving_a_replica_make_before_break(make_stack):
    """Two 80 GB GPUs, 30 GB replicas: llm x2 fill GPU 0 to 60 GB, so llm_stream lands on GPU 1; when llm drops to
    one replica, the actuator moves one replica so that a GPU is freed: the replacement starts first, then the
    old one drains; one move, within max_moves_per_hour."""
    from ebbflow.runtime.config import PlacementConfig

    policy = ModelPolicy(model="llm", min_replicas=2, max_replicas=2, gpu_memory_gb_per_instance=30, scale_down_delay_s=0)
    stack = await make_stack(policy, PlacementConfig(nodes=("local:2x80",), max_moves_per_hour=2))
    await wait_for(lambda: len(stack.view.ready("llm")) == 2, 60, "two llm replicas")
    stream = ModelPolicy(model="llm_stream", min_replicas=1, max_replicas=1, gpu_memory_gb_per_instance=30)
    await stack.bus.policies.put("llm_stream", policy_to_proto(stream).SerializeToString())
    await wait_for(lambda: len(stack.view.ready("llm_stream")) == 1, 60, "one llm_stream replica")
    slots = lambda model: sorted(e.gpu_slot for e in stack.view.of_model(model))  # noqa: E731
    assert slots("llm") == ["local/gpu0", "local/gpu0"] and slots("llm_stream") == ["local/gpu1"]

    one = ModelPolicy(model="llm", min_replicas=1, max_replicas=1, gpu_memory_gb_per_instance=30, scale_down_delay_s=0)
    await stack.bus.policies.put("llm", policy_to_proto(one).SerializeToString())
    await wait_for(lambda: len({e.gpu_slot for e in stack.view.replicas.values()}) == 1 and len(stack.view.replicas) == 2, 60, "both models on one GPU")
    assert all(e.state == READY for e in stack.view.replicas.values())
    assert stack.sample("ebbflow_actuator_moves_total", {"model": "llm"}) == 1.0
    await asyncio.sleep(2.0)  # settled: no further move
    assert stack.sample("ebbflow_actuator_moves_total", {"model": "llm"}) == 1.0
