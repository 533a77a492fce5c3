"""The policy API over gRPC with the real nats-server: validation by field, HPA import, delete."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ebbflow.runtime.bus import connect
from ebbflow.runtime.grpc_server import GrpcServer
from ebbflow.runtime.registry import RegistryView
from ebbflow.scheduler.api import PolicyApi
from ebbflow.v1 import policy_pb2, policy_pb2_grpc
from tests.conftest import wait_for
from tests.integration.conftest import reset_jetstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: chat}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: chat}
  maxReplicas: 6
  metrics:
  - type: Pods
    pods: {metric: {name: in_flight}, target: {type: AverageValue, averageValue: "5"}}
"""


async def test_policies_are_validated_imported_and_deleted_over_grpc(nats_url: str) -> None:
    await reset_jetstream(nats_url)
    bus = await connect(nats_url, name="policy-test")
    view, stop = RegistryView(), asyncio.Event()
    watcher = asyncio.create_task(view.run(bus, stop))
    await view.wait_loaded(10)
    server = GrpcServer([policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name])
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyApi(bus, view), server.server)
    port = server.bind("127.0.0.1", 0)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    try:
        bad = policy_pb2.ScalingPolicy(model="llm", min_replicas=3, max_replicas=2, target_in_flight_per_replica=0, forecast_quantile=1.5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=bad))
        details = refused.value.details()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert all(name in details for name in ("max_replicas", "target_in_flight_per_replica", "forecast_quantile")), details

        good = policy_pb2.ScalingPolicy(model="llm", min_replicas=1, max_replicas=3, target_in_flight_per_replica=4, forecast_quantile=0.9)
        stored = (await stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=good))).policy
        assert stored.instances_per_replica == 0 and stored.max_batch_size == 0 and stored.panic_threshold == 0  # as given: 0 = the config's, off
        assert (await stub.GetPolicy(policy_pb2.GetPolicyRequest(model="llm"))).policy == stored

        imported = await stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA, apply=True))
        assert imported.applied and imported.policy.model == "chat" and imported.policy.target_in_flight_per_replica == 5
        await wait_for(lambda: {"llm", "chat"} <= set(view.policies), 5, "both policies in the view")
        listed = await stub.ListPolicies(policy_pb2.ListPoliciesRequest())
        assert [p.model for p in listed.policies] == ["chat", "llm"]

        await stub.DeletePolicy(policy_pb2.DeletePolicyRequest(model="chat"))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetPolicy(policy_pb2.GetPolicyRequest(model="chat"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND and "llm" in missing.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest="kind: [unclosed"))
        assert broken.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close()
        await server.stop(grace_s=0.2)
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()


async def test_an_advisory_policy_publishes_decisions_and_never_writes_desired_state(nats_url: str) -> None:
    from nats.js.errors import KeyNotFoundError
    from prometheus_client import CollectorRegistry

    from ebbflow.runtime import subjects
    from ebbflow.runtime.config import ModelPolicy, SchedulerConfig
    from ebbflow.scheduler.service import Scheduler, SchedulerMetrics, policy_to_proto
    from ebbflow.v1 import load_pb2, scheduling_pb2

    await reset_jetstream(nats_url)
    bus = await connect(nats_url, name="advisory-test")
    view, stop = RegistryView(), asyncio.Event()
    watcher = asyncio.create_task(view.run(bus, stop))
    await view.wait_loaded(10)
    await bus.policies.put("llm", policy_to_proto(ModelPolicy(model="llm", mode="advisory", max_replicas=6, target_in_flight_per_replica=4)).SerializeToString())
    await wait_for(lambda: "llm" in view.policies, 5, "the policy in the view")
    advice: list[scheduling_pb2.ScalingDecision] = []

    async def on_decision(msg) -> None:  # type: ignore[no-untyped-def]
        advice.append(scheduling_pb2.ScalingDecision.FromString(msg.data))

    subscription = await bus.nc.subscribe(subjects.decision_subject("llm"), cb=on_decision)
    scheduler = Scheduler(SchedulerConfig(interval_s=0.2), bus, view, SchedulerMetrics(CollectorRegistry()))
    task = asyncio.create_task(scheduler.run(stop))
    try:
        snapshot = load_pb2.LoadSnapshot(model="llm", status=load_pb2.DATA_STATUS_FRESH, in_flight=18.0, arrival_rps=30.0)
        for _ in range(10):
            await bus.nc.publish(subjects.load_subject("llm"), snapshot.SerializeToString())
            await asyncio.sleep(0.2)
        await wait_for(lambda: any(a.desired.horizontal.replicas == 5 for a in advice), 5, "advice for 18 in flight")
        assert all(a.advisory and a.generation == 0 for a in advice)
        # min_replicas before any load, then 18 / 4 -> 5; each advice once.
        assert [a.desired.horizontal.replicas for a in advice] == [1, 5]
        with pytest.raises(KeyNotFoundError):
            await bus.desired.get("llm")  # nothing carried out
    finally:
        stop.set()
        await asyncio.gather(task, watcher, return_exceptions=True)
        await subscription.unsubscribe()
        await bus.close()


async def test_with_an_admin_token_only_the_holder_changes_policies_and_reads_stay_open(nats_url: str) -> None:
    await reset_jetstream(nats_url)
    bus = await connect(nats_url, name="admin-token-test")
    view, stop = RegistryView(), asyncio.Event()
    watcher = asyncio.create_task(view.run(bus, stop))
    await view.wait_loaded(10)
    server = GrpcServer([policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name])
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyApi(bus, view, admin_token="s3cret"), server.server)
    port = server.bind("127.0.0.1", 0)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    policy = policy_pb2.ScalingPolicy(model="llm", min_replicas=1, max_replicas=3, target_in_flight_per_replica=4)
    try:
        for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED), ((("authorization", "Bearer wrong"),), grpc.StatusCode.PERMISSION_DENIED)):
            for call in (
                lambda: stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=policy), metadata=metadata),
                lambda: stub.DeletePolicy(policy_pb2.DeletePolicyRequest(model="llm"), metadata=metadata),
                lambda: stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA, apply=True), metadata=metadata),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call()
                assert refused.value.code() == code, refused.value.details()
        admin = (("authorization", "Bearer s3cret"),)
        await stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=policy), metadata=admin)
        assert (await stub.GetPolicy(policy_pb2.GetPolicyRequest(model="llm"))).policy.max_replicas == 3  # reads need no token
        translated = await stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA))  # a dry run stores nothing: no token either
        assert not translated.applied and translated.policy.model == "chat"
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetPolicy(policy_pb2.GetPolicyRequest(model="chat"))
    finally:
        await channel.close()
        await server.stop(grace_s=0.2)
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()
