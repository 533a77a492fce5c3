"""The Kubernetes actuator's shell on fakes of its two ports (the API server's calls, the registry bucket): a refused
or failed scale is held and tried again, nothing else written; registry entries follow the pods.

Against the real API server, NATS and router: tests/integration/test_kubernetes.py.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ebbflow.actuator.kubernetes import DeploymentRef, DeploymentScaler, KubernetesActuator, ModelDeployment
from ebbflow.actuator.pods import PodView, pod_view
from ebbflow.kube.client import ConflictError, ForbiddenError
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.process import free_port
from ebbflow.v1 import registry_pb2, scheduling_pb2

PODS = json.loads((Path(__file__).parent.parent / "data" / "kube_pods.json").read_text())
REF = DeploymentRef("default", "triton-llm")


@dataclass
class FakeApi:
    """The scale subresource of one Deployment; `fail_writes` raises on the next writes, `conflicts` 409s them."""

    replicas: int = 1
    version: int = 7
    fail_writes: list[Exception] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        assert path == f"{REF.path}/scale"
        return {"metadata": {"resourceVersion": str(self.version)}, "spec": {"replicas": self.replicas}}

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(copy.deepcopy(body))
        if self.fail_writes:
            raise self.fail_writes.pop(0)
        assert body["metadata"]["resourceVersion"] == str(self.version), "a write carries the version it read"
        self.replicas, self.version = body["spec"]["replicas"], self.version + 1
        return body

    def watch(self, path: str, resource_version: str, params: dict[str, str] | None = None) -> Any:
        raise AssertionError("not watched here")


@dataclass
class FakeKv:
    values: dict[str, bytes] = field(default_factory=dict)
    error: Exception | None = None

    async def put(self, key: str, value: bytes) -> None:
        if self.error:
            raise self.error
        self.values[key] = value

    async def delete(self, key: str) -> None:
        if self.error:
            raise self.error
        self.values.pop(key, None)

    async def keys(self) -> list[str]:
        return list(self.values)


@dataclass
class FakeBus:
    replicas: FakeKv = field(default_factory=FakeKv)


def renamed(kind: str, name: str) -> PodView:
    """A captured pod under another name, at 127.0.0.1 with its Triton HTTP port on one nothing listens on."""
    pod = copy.deepcopy(PODS[kind])
    pod["metadata"]["name"] = name
    pod["status"]["podIP"] = "127.0.0.1"
    pod["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": free_port()}]
    return pod_view(pod)


def actuator(api: FakeApi, bus: FakeBus) -> KubernetesActuator:
    made = KubernetesActuator(bus, api, {"llm": ModelDeployment(REF, "app=triton-llm")})  # type: ignore[arg-type]
    made.desired["llm"] = scheduling_pb2.DesiredState(model="llm", horizontal=scheduling_pb2.HorizontalDecision(replicas=3))
    made.watches["llm"].listed.set()
    return made


async def test_nothing_is_scaled_before_the_pods_are_listed() -> None:
    api, bus = FakeApi(), FakeBus()
    act = actuator(api, bus)
    act.watches["llm"].listed.clear()
    await act.reconcile_once()
    assert api.writes == [] and "not listed yet" in act.scale_errors["llm"]


async def test_scale_down_drains_the_chosen_pods_first_and_counts_them_out() -> None:
    api, bus = FakeApi(replicas=2), FakeBus()
    act = actuator(api, bus)
    act.drain_propagation_s = act.unready_timeout_s = 0.0
    act.desired["llm"].horizontal.replicas = 1
    ready, starting, other = renamed("ready", "chosen"), renamed("running_not_ready", "starting"), renamed("ready", "other")
    act.watches["llm"].pods = {starting.name: starting, ready.name: ready}
    await act.reconcile_once()
    assert act.draining == set() and api.replicas == 1, "a starting pod goes first, with no drain: the ReplicaSet removes it first"
    api.replicas = 2
    act.watches["llm"].pods = {ready.name: ready, other.name: other}
    act.choose_drains = lambda live, desired: [ready.name]
    await act.reconcile_once()  # nothing serves there: the unload fails, the pod stays ready, so no scale-down
    assert act.draining == {ready.name} and api.replicas == 2 and "still ready" in act.scale_errors["llm"]
    assert registry_pb2.ReplicaEntry.FromString(bus.replicas.values[f"llm.{ready.name}"]).state == registry_pb2.REPLICA_STATE_DRAINING
    act.watches["llm"].pods = {ready.name: renamed("running_not_ready", "chosen"), other.name: other}
    await act.reconcile_once()
    assert api.replicas == 1 and "llm" not in act.scale_errors, "once not ready it is counted out and the scale is written"


async def test_conflicts_are_retried_from_a_fresh_read_up_to_a_bound() -> None:
    api = FakeApi(fail_writes=[ConflictError("stale", 409)])
    outcome = await DeploymentScaler(api).scale(REF, 4)
    assert (outcome.replicas, outcome.conflicts, len(api.writes), api.replicas) == (4, 1, 2, 4)
    always = FakeApi(fail_writes=[ConflictError("stale", 409)] * 3)
    with pytest.raises(UnavailableError, match="changed under every one of 3 scale writes"):
        await DeploymentScaler(always, max_conflicts=2).scale(REF, 4)
    assert always.replicas == 1


async def test_a_refused_scale_is_held_and_tried_again_next_tick() -> None:
    api, bus = FakeApi(fail_writes=[ForbiddenError('cannot update resource "deployments/scale"', 403)]), FakeBus()
    act = actuator(api, bus)
    await act.reconcile_once()
    assert api.replicas == 1 and 'cannot update resource "deployments/scale"' in act.scale_errors["llm"]
    await act.reconcile_once()
    assert api.replicas == 3 and "llm" not in act.scale_errors
    writes = len(api.writes)
    await act.reconcile_once()
    assert len(api.writes) == writes, "in sync: nothing written"


async def test_registry_entries_follow_the_pods_and_wait_out_a_nats_outage() -> None:
    api, bus = FakeApi(replicas=3), FakeBus()
    act = actuator(api, bus)
    watch = act.watches["llm"]
    watch.listed.set()
    ready, unplaced = pod_view(PODS["ready"]), pod_view(PODS["unplaced"])
    watch.pods = {ready.name: ready, unplaced.name: unplaced}
    bus.replicas.error = ConnectionError("nats away")
    await act.reconcile_once()
    assert bus.replicas.values == {}
    bus.replicas.error = None
    await act.reconcile_once()
    assert list(bus.replicas.values) == [f"llm.{ready.name}"], "the unplaced pod has no address, so no entry"
    entry = registry_pb2.ReplicaEntry.FromString(bus.replicas.values[f"llm.{ready.name}"])
    assert (entry.host, entry.grpc_port, entry.state) == ("127.0.1.2", 8001, registry_pb2.REPLICA_STATE_READY)
    draining = pod_view(PODS["terminating"])
    watch.pods = {draining.name: draining}
    await act.reconcile_once()
    assert registry_pb2.ReplicaEntry.FromString(bus.replicas.values[f"llm.{draining.name}"]).state == registry_pb2.REPLICA_STATE_DRAINING
    watch.pods = {}
    await act.reconcile_once()
    assert bus.replicas.values == {}


async def test_a_restarted_actuator_takes_over_the_entries_of_an_earlier_one() -> None:
    api, bus = FakeApi(replicas=3), FakeBus()
    kept, gone = pod_view(PODS["ready"]), "triton-llm-549c7689b7-gone1"
    bus.replicas.values = {f"llm.{kept.name}": b"old", f"llm.{gone}": b"old", "other-model.x": b"not ours"}
    act = actuator(api, bus)
    act.watches["llm"].pods = {kept.name: kept}
    await act.adopt_entries()
    await act.reconcile_once()
    assert set(bus.replicas.values) == {f"llm.{kept.name}", "other-model.x"}, "the entry of a pod gone meanwhile is removed, others' untouched"
    assert registry_pb2.ReplicaEntry.FromString(bus.replicas.values[f"llm.{kept.name}"]).host == "127.0.1.2"
