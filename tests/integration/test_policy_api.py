"""The policy API over gRPC with the real nats-server: validation by field, patches and pins, models the
repository serves, HPA import, and a delete that stops the model's real replicas."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from ebbflow.runtime.bus import Bus
from ebbflow.runtime.grpc_server import GrpcServer
from ebbflow.runtime.registry import RegistryView, connected
from ebbflow.runtime.triton import default_model_repository, publish_model_configs
from ebbflow.scheduler.api import PolicyApi
from ebbflow.v1 import policy_pb2, policy_pb2_grpc
from tests.conftest import wait_for
from tests.integration.conftest import reset_jetstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: llm_stream}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llm_stream}
  maxReplicas: 6
  metrics:
  - type: Pods
    pods: {metric: {name: in_flight}, target: {type: AverageValue, averageValue: "5"}}
"""


@contextlib.asynccontextmanager
async def policy_service(nats_url: str, admin_token: str = "") -> AsyncIterator[tuple[Bus, RegistryView, policy_pb2_grpc.PolicyServiceStub]]:
    """The PolicyService on a free port over empty buckets, with the default repository's models (llm, llm_stream) published."""
    await reset_jetstream(nats_url)
    async with connected(nats_url, "policy-test", 10) as (bus, view):
        await bus.models.put("retired", b"")  # left by an earlier run whose repository had it: publishing removes it
        await publish_model_configs(bus.models, default_model_repository())
        await wait_for(lambda: set(view.model_configs) == {"llm", "llm_stream"}, 30, "the repository's models in the view")
        server = GrpcServer([policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name])
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyApi(bus, view, admin_token=admin_token), server.server)
        port = server.bind("127.0.0.1", 0)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield bus, view, policy_pb2_grpc.PolicyServiceStub(channel)
        finally:
            await channel.close()
            await server.stop(grace_s=0.2)


async def refused(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def test_policies_are_validated_imported_and_deleted_over_grpc(nats_url: str) -> None:
    async with policy_service(nats_url) as (bus, view, stub):
        bad = policy_pb2.ScalingPolicy(model="llm", min_replicas=3, max_replicas=2, target_in_flight_per_replica=0, forecast_quantile=1.5)
        error = await refused(stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=bad, replace=True)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert all(name in error.details() for name in ("max_replicas", "target_in_flight_per_replica", "forecast_quantile")), error.details()

        good = policy_pb2.ScalingPolicy(model="llm", min_replicas=1, max_replicas=3, target_in_flight_per_replica=4, forecast_quantile=0.9)
        stored = (await stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=good, replace=True))).policy
        assert stored.instances_per_replica == 0 and stored.max_batch_size == 0 and stored.panic_threshold == 0  # replaced as given: 0 = the config's, off
        assert (await stub.GetPolicy(policy_pb2.GetPolicyRequest(model="llm"))).policy == stored

        imported = await stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA, apply=True))
        assert imported.applied and imported.policy.model == "llm_stream" and imported.policy.target_in_flight_per_replica == 5
        assert imported.notes[-1] == "sizing: in_flight_target 5"
        await wait_for(lambda: {"llm", "llm_stream"} <= set(view.policies), 5, "both policies in the view")
        listed = await stub.ListPolicies(policy_pb2.ListPoliciesRequest())
        assert [p.model for p in listed.policies] == ["llm", "llm_stream"]

        await stub.DeletePolicy(policy_pb2.DeletePolicyRequest(model="llm_stream"))
        missing = await refused(stub.GetPolicy(policy_pb2.GetPolicyRequest(model="llm_stream")))
        assert missing.code() == grpc.StatusCode.NOT_FOUND and "llm" in missing.details()
        broken = await refused(stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest="kind: [unclosed")))
        assert broken.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "manifest,field",
    [
        ("- a\n- list\n", "the manifest must be a mapping"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n", "spec is missing"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: [4], scaleTargetRef: {name: llm}}\n", "spec.maxReplicas must be a number"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, metrics: {type: Pods}}\n", "spec.metrics must be a list"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, behavior: {scaleUp: [1]}}\n", "spec.behavior.scaleUp must be a mapping"),
    ],
)
async def test_a_malformed_hpa_is_invalid_argument_naming_the_field(nats_url: str, manifest: str, field: str) -> None:
    async with policy_service(nats_url) as (_, _, stub):
        for apply in (False, True):
            error = await refused(stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=manifest, apply=apply)))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and field in error.details(), (error.code(), error.details())
        assert (await stub.ListPolicies(policy_pb2.ListPoliciesRequest())).policies == []  # the service is still up and stored nothing


async def test_set_is_a_patch_replace_sets_the_whole_policy_and_a_pin_is_never_dropped_silently(nats_url: str) -> None:
    async with policy_service(nats_url) as (_, _, stub):

        async def patch(mask: list[str] | None = None, **fields: object) -> policy_pb2.SetPolicyResponse:
            request = policy_pb2.SetPolicyRequest(policy=policy_pb2.ScalingPolicy(model="llm", **fields))  # type: ignore[arg-type]
            if mask is not None:
                request.update_mask.CopyFrom(FieldMask(paths=mask))
            return await stub.SetPolicy(request)

        created = await patch(max_replicas=8)
        assert created.policy.max_replicas == 8 and created.policy.target_in_flight_per_replica == 4 and created.policy.panic_threshold == 2  # the rest: defaults
        assert "max_replicas: (default) 4 -> 8" in created.changes
        second = await patch(min_replicas=2)
        assert (second.policy.min_replicas, second.policy.max_replicas) == (2, 8) and list(second.changes) == ["min_replicas: 1 -> 2"]
        zeroed = await patch(["forecast_quantile"])  # named in the mask and left at zero: set to zero
        assert zeroed.policy.forecast_quantile == 0 and zeroed.policy.max_replicas == 8
        assert not (await patch(max_replicas=8)).changes  # nothing to change

        invalid = await refused(patch(min_replicas=9))
        assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_replicas" in invalid.details()
        unknown = await refused(patch(["max_replica"]))
        assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_replica" in unknown.details()

        await patch(pinned=True, pin_replicas=5, pin_by="alice", pin_reason="incident 42")
        kept = (await patch(max_replicas=6)).policy  # a patch that does not mention the pin keeps it
        assert kept.pinned and kept.pin_replicas == 5 and kept.max_replicas == 6
        imported = await stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA, model="llm", apply=True))  # an import keeps it too, and says so
        assert imported.policy.pinned and imported.policy.pin_by == "alice" and imported.policy.max_replicas == 6
        assert any("pin at 5 replicas by alice (incident 42) is kept" in note for note in imported.notes), imported.notes

        whole = policy_pb2.ScalingPolicy(model="llm", min_replicas=1, max_replicas=3, target_in_flight_per_replica=2)
        dropped = await refused(stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=whole, replace=True)))
        assert dropped.code() == grpc.StatusCode.FAILED_PRECONDITION and "pinned at 5 replicas by alice" in dropped.details(), dropped.details()
        assert (await stub.GetPolicy(policy_pb2.GetPolicyRequest(model="llm"))).policy.pinned  # nothing stored

        pinned_too = policy_pb2.ScalingPolicy(model="llm", max_replicas=3, target_in_flight_per_replica=2, pinned=True, pin_replicas=1, pin_by="bob", pin_reason="cost")
        assert (await stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=pinned_too, replace=True))).policy.pin_by == "bob"
        unpinned = await stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=whole, replace=True, unpin=True))
        assert "pinned: True -> False" in unpinned.changes
        replaced = unpinned.policy
        assert not replaced.pinned and replaced.max_replicas == 3 and replaced.panic_threshold == 0  # whole: zero is zero


async def test_a_policy_for_a_model_outside_the_repository_is_refused_naming_those_inside(nats_url: str) -> None:
    from ebbflow.policy import ModelPolicy, policy_from_proto, policy_to_proto
    from ebbflow.runtime.errors import ConfigError
    from ebbflow.scheduler.api import config_policies

    async with policy_service(nats_url) as (bus, view, stub):
        assert "retired" not in view.model_configs  # not in the repository any more
        for model in ("chat", "retired"):
            error = await refused(stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=policy_pb2.ScalingPolicy(model=model, max_replicas=2))))
            assert error.code() == grpc.StatusCode.NOT_FOUND and "its models are: llm, llm_stream" in error.details(), error.details()
        for apply in (False, True):
            error = await refused(stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA.replace("name: llm_stream", "name: chat"), apply=apply)))
            assert error.code() == grpc.StatusCode.NOT_FOUND and "'chat'" in error.details() and "--model" in error.details()
        assert (await stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA.replace("name: llm_stream", "name: chat"), model="llm"))).policy.model == "llm"
        assert (await stub.ListPolicies(policy_pb2.ListPoliciesRequest())).policies == []

        # At start, the config file's policies: refused for a model outside the repository, and a run-time pin outlives them.
        with pytest.raises(ConfigError, match="no model 'chat' in the model repository; its models are: llm, llm_stream"):
            await config_policies(bus, (ModelPolicy(model="llm"), ModelPolicy(model="chat")), set(view.model_configs))
        pinned = ModelPolicy(model="llm", pinned=True, pin_replicas=3, pin_by="alice", pin_reason="launch")
        await bus.policies.put("llm", policy_to_proto(pinned).SerializeToString())
        imported = await config_policies(bus, (ModelPolicy(model="llm", max_replicas=6), ModelPolicy(model="llm_stream")), set(view.model_configs))
        assert imported[0].max_replicas == 6 and (imported[0].pinned, imported[0].pin_replicas, imported[0].pin_by) == (True, 3, "alice")
        assert not imported[1].pinned and policy_from_proto(policy_to_proto(imported[0])) == imported[0]


async def test_an_advisory_policy_publishes_decisions_and_never_writes_desired_state(nats_url: str) -> None:
    from nats.js.errors import KeyNotFoundError
    from prometheus_client import CollectorRegistry

    from ebbflow.runtime import subjects
    from ebbflow.policy import ModelPolicy, policy_to_proto
    from ebbflow.runtime.config import SchedulerConfig
    from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
    from ebbflow.v1 import load_pb2, scheduling_pb2

    await reset_jetstream(nats_url)
    async with connected(nats_url, "advisory-test", 10) as (bus, view):
        stop = asyncio.Event()
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
            await asyncio.gather(task, return_exceptions=True)
            await subscription.unsubscribe()


async def test_with_an_admin_token_only_the_holder_changes_policies_and_reads_stay_open(nats_url: str) -> None:
    policy = policy_pb2.ScalingPolicy(model="llm", min_replicas=1, max_replicas=3, target_in_flight_per_replica=4)
    async with policy_service(nats_url, admin_token="s3cret") as (_, _, stub):
        for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED), ((("authorization", "Bearer wrong"),), grpc.StatusCode.PERMISSION_DENIED)):
            for call in (
                lambda: stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=policy), metadata=metadata),
                lambda: stub.DeletePolicy(policy_pb2.DeletePolicyRequest(model="llm"), metadata=metadata),
                lambda: stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA, apply=True), metadata=metadata),
            ):
                error = await refused(call())
                assert error.code() == code, error.details()
        admin = (("authorization", "Bearer s3cret"),)
        await stub.SetPolicy(policy_pb2.SetPolicyRequest(policy=policy), metadata=admin)
        assert (await stub.GetPolicy(policy_pb2.GetPolicyRequest(model="llm"))).policy.max_replicas == 3  # reads need no token
        translated = await stub.ImportHpa(policy_pb2.ImportHpaRequest(manifest=HPA))  # a dry run stores nothing: no token either
        assert not translated.applied and translated.policy.model == "llm_stream"
        await refused(stub.GetPolicy(policy_pb2.GetPolicyRequest(model="llm_stream")))


@pytest.mark.timeout(180)
async def test_policy_delete_drains_and_stops_the_models_real_replicas_and_it_leaves_status(make_stack, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Through the CLI against a real stack: a patch keeps the rest of the policy, and delete stops every tritonserver of the model."""
    import json
    import os

    import tritonclient.grpc.aio as triton_aio
    from nats.js.errors import KeyNotFoundError
    from tritonclient.utils import InferenceServerException

    from tests.conftest import llm_inputs

    from ebbflow import cli
    from ebbflow.policy import ModelPolicy
    from ebbflow.up import STATE_FILE
    from ebbflow.v1 import status_pb2, status_pb2_grpc

    stack = await make_stack(ModelPolicy(model="llm", min_replicas=2, max_replicas=2, forecast_quantile=0))
    await wait_for(lambda: len(stack.view.ready("llm")) == 2, 60, "two ready llm replicas")
    pids = [entry.pid for entry in stack.view.of_model("llm")]
    assert len(pids) == 2 and all(pids)
    state_dir = tmp_path / "cli"
    state_dir.mkdir()
    (state_dir / STATE_FILE).write_text(json.dumps({"control": stack.addresses.control}))

    patch = tmp_path / "patch.yaml"
    patch.write_text("models:\n  llm: {scale_down_delay_s: 45}\n")
    assert await asyncio.to_thread(cli.main, ["policy", "set", str(patch), "--state-dir", str(state_dir)]) == 0
    assert "scale_down_delay_s: 30.0 -> 45.0" in capsys.readouterr().out
    stored = stack.view.policies.get("llm")
    await wait_for(lambda: stack.view.policies["llm"].scale_down_delay_s == 45, 5, "the patch in the view")
    assert stored is not None and (stack.view.policies["llm"].min_replicas, stack.view.policies["llm"].max_replicas) == (2, 2)  # the rest kept
    assert await asyncio.to_thread(cli.main, ["policy", "list", "--state-dir", str(state_dir)]) == 0
    assert "llm              2-2 replicas, in_flight_target 4, no forecast" in capsys.readouterr().out

    assert await asyncio.to_thread(cli.main, ["policy", "delete", "llm", "--state-dir", str(state_dir)]) == 0
    assert "drain and stop" in capsys.readouterr().out
    await wait_for(lambda: not stack.view.of_model("llm") and not stack.actuator.replicas, 60, "every llm replica stopped and out of the registry")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the tritonserver is gone, not just unregistered
    with pytest.raises(KeyNotFoundError):
        await stack.bus.desired.get("llm")  # and the scheduler, ticking all the while, wrote none again
    client = triton_aio.InferenceServerClient(stack.addresses.router)
    try:
        with pytest.raises(InferenceServerException) as unknown:
            await client.infer("llm", llm_inputs("alpha beta", 4))
        assert "NOT_FOUND" in str(unknown.value.status()) and "unknown model 'llm'" in unknown.value.message()
    finally:
        await client.close()
    channel = grpc.aio.insecure_channel(stack.addresses.control)
    try:
        status = status_pb2_grpc.StatusServiceStub(channel)
        assert "llm" not in [m.name for m in (await status.GetStatus(status_pb2.GetStatusRequest())).models]
        error = await refused(status.GetStatus(status_pb2.GetStatusRequest(model="llm")))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()
