"""Triton on a real Kubernetes control plane: a Deployment scaled through its scale subresource, pods bound by the
real scheduler (GPU limits enforced), run by the loopback kubelet as real tritonservers, and served from the pod IP.

One cluster per module (tests/kube/cluster.py: etcd, kube-apiserver with token auth and RBAC, controller-manager,
scheduler; ~10 s to start) with two loopback nodes holding 3 + 2 GPUs. Skipped when `make kube` has not built the
binaries on this machine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import pytest
import pytest_asyncio
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from ebbflow.actuator.core import Phase
from ebbflow.actuator.kubernetes import DeploymentRef, DeploymentScaler, KubernetesActuator, ModelDeployment, PodWatch
from ebbflow.actuator.pods import PodView, pod_view, replica_entry, summarise
from ebbflow.kube.client import ConflictError, ForbiddenError, KubeClient
from ebbflow.runtime.errors import NotFoundError
from ebbflow.runtime.triton import shm_prefix
from ebbflow.v1 import registry_pb2, scheduling_pb2
from tests.integration.conftest import RouterBed
from tests.conftest import expected_output, llm_inputs, wait_for
from tests.kube.cluster import KubeCluster, find_binaries
from tests.kube.kubelet import LoopbackKubelet
from tests.kube.workloads import DEPLOYMENT, NAMESPACE, SCALE_PATH, SELECTOR, is_ready, triton_deployment, unschedulable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_binaries() is None, reason="no Kubernetes control plane built here: run `make kube`"),
]

NODES = {"gpu-node-a": 3, "gpu-node-b": 2}
READER = "ebbflow-reader"
"""A user RBAC lets read the Deployment's scale and nothing more."""
REF = DeploymentRef(NAMESPACE, DEPLOYMENT)
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}"


class Bed:
    def __init__(self, cluster: KubeCluster, client: KubeClient, kubelet: LoopbackKubelet) -> None:
        self.cluster, self.client, self.kubelet = cluster, client, kubelet
        self.pods: list[dict[str, Any]] = []
        self.all_pods: list[dict[str, Any]] = []

    async def refresh(self) -> list[dict[str, Any]]:
        """The Deployment's pods; `pods` keeps those not being deleted, `all_pods` every one."""
        listed = await self.client.get(f"/api/v1/namespaces/{NAMESPACE}/pods", SELECTOR)
        self.all_pods = listed["items"]
        self.pods = [p for p in self.all_pods if not p["metadata"].get("deletionTimestamp")]
        return self.pods

    async def scale(self, replicas: int) -> None:
        """Write the scale subresource from a fresh read; a conflict (the controllers wrote the Deployment's status
        meanwhile) is retried from a fresh read, as any writer must."""
        for _ in range(10):
            scale = await self.client.get(SCALE_PATH)
            scale["spec"]["replicas"] = replicas
            try:
                await self.client.replace(SCALE_PATH, scale)
                return
            except ConflictError:
                continue
        raise AssertionError("10 conflicts in a row writing the scale")

    async def wait_pods(self, ready: int, pending: int = 0, timeout_s: float = 60) -> None:
        """Until exactly `ready` pods are Ready and `pending` unschedulable, and there are no others, not even pods being
        deleted (so the next step starts from a settled Deployment)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            pods = await self.refresh()
            counts = (sum(1 for p in pods if is_ready(p)), sum(1 for p in pods if unschedulable(p)), len(self.all_pods))
            if counts == (ready, pending, ready + pending):
                return
            if loop.time() > deadline:
                seen = [(v.name, v.phase.value, v.reason) for v in map(pod_view, self.all_pods)]
                raise AssertionError(f"after {timeout_s:.0f} s: (ready, unschedulable, all) pods are {counts}, not {(ready, pending, ready + pending)}: {seen}")
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bed]:
    binaries = find_binaries()
    assert binaries is not None
    root = tmp_path_factory.mktemp("kube")
    cluster = KubeCluster(root / "cluster", binaries, users=(READER,))
    try:
        await cluster.start()
        client = cluster.client()
        kubelet = LoopbackKubelet(client, root / "kubelet", NODES)
        await kubelet.start()
        await client.create(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", triton_deployment())
        yield Bed(cluster, client, kubelet)
        await kubelet.stop()
        await client.close()
    finally:
        await cluster.stop()


async def test_scaled_deployment_serves_from_pod_ips(bed: Bed) -> None:
    await bed.scale(1)
    await bed.wait_pods(ready=1)
    await bed.scale(5)
    await bed.wait_pods(ready=5)
    pods = bed.pods
    assert {p["spec"]["nodeName"] for p in pods} == set(NODES), "the scheduler spreads the pods over both nodes"
    assert sorted(sum(1 for p in pods if p["spec"]["nodeName"] == n) for n in NODES) == sorted(NODES.values())
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 5 and all(ip.startswith("127.0.1.") for ip in ips)
    for ip in sorted(ips):
        client = triton_aio.InferenceServerClient(f"{ip}:8001")
        try:
            result = await client.infer("llm", llm_inputs("alpha beta gamma", 4))
        finally:
            await client.close()
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output("alpha beta gamma", 4)
    status = (await bed.client.get(DEPLOYMENT_PATH))["status"]
    assert status["readyReplicas"] == 5 and status["availableReplicas"] == 5


async def test_beyond_gpu_capacity_pods_stay_pending(bed: Bed) -> None:
    await bed.scale(7)
    await bed.wait_pods(ready=5, pending=2)
    pending = [p for p in bed.pods if unschedulable(p)]
    message = next(c["message"] for c in pending[0]["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "Insufficient nvidia.com/gpu" in message
    # Back within capacity: the ReplicaSet removes the unscheduled pods first, the serving ones stay.
    serving = {p["metadata"]["uid"] for p in bed.pods if is_ready(p)}
    await bed.scale(5)
    await bed.wait_pods(ready=5)
    assert {p["metadata"]["uid"] for p in bed.pods} == serving


async def test_stale_resource_version_is_refused(bed: Bed) -> None:
    read = await bed.client.get(SCALE_PATH)
    first = {**read, "spec": {"replicas": 2}}
    written = await bed.client.replace(SCALE_PATH, first)
    assert written["spec"]["replicas"] == 2
    stale = {**read, "spec": {"replicas": 4}}  # still carries the resourceVersion read before the first write
    with pytest.raises(ConflictError) as refused:
        await bed.client.replace(SCALE_PATH, stale)
    assert refused.value.status == 409
    assert (await bed.client.get(SCALE_PATH))["spec"]["replicas"] == 2
    await bed.wait_pods(ready=2)


class InterferingApi:
    """The real client, but before its first scale write another writer changes the Deployment (an annotation),
    so that write carries a stale resourceVersion and the real API server refuses it."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.interfered = False

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.client.get(path, params)

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if not self.interfered:
            self.interfered = True
            await self.client.merge_patch(DEPLOYMENT_PATH, {"metadata": {"annotations": {"example.com/touched": "yes"}}})
        return await self.client.replace(path, body)

    def watch(self, path: str, resource_version: str, params: dict[str, str] | None = None) -> Any:
        return self.client.watch(path, resource_version, params)


async def test_scaler_retries_a_conflict_from_a_fresh_read(bed: Bed) -> None:
    api = InterferingApi(bed.client)
    outcome = await DeploymentScaler(api).scale(REF, 3)
    # At least the one conflict made here (the deployment controller may write the status meanwhile: another).
    assert (outcome.previous, outcome.replicas, outcome.written) == (2, 3, True) and outcome.conflicts >= 1 and api.interfered
    deployment = await bed.client.get(DEPLOYMENT_PATH)
    assert deployment["spec"]["replicas"] == 3 and deployment["metadata"]["annotations"]["example.com/touched"] == "yes"
    before = bed.client.requests
    again = await DeploymentScaler(bed.client).scale(REF, 3)
    assert (again.written, again.conflicts, bed.client.requests - before) == (False, 0, 1), "in sync: one read, no write"
    await bed.wait_pods(ready=3)


async def test_pod_watch_feeds_replica_entries_and_reports_unplaced_pods(bed: Bed) -> None:
    changes = asyncio.Event()
    watch = PodWatch(bed.client, NAMESPACE, SELECTOR["labelSelector"], on_change=changes.set)
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    try:
        await asyncio.wait_for(watch.listed.wait(), 10)
        assert summarise(watch.pods).ready == 3
        await DeploymentScaler(bed.client).scale(REF, 7)
        await wait_for(lambda: (summarise(watch.pods).ready, summarise(watch.pods).unplaced) == (5, 2), 60, "5 ready and 2 unplaced pods in the watch")
        unplaced = [v for v in watch.pods.values() if v.unplaced]
        assert all("Insufficient nvidia.com/gpu" in v.reason and replica_entry(v, "llm") is None for v in unplaced)
        entries = [replica_entry(v, "llm") for v in watch.pods.values() if v.phase == Phase.READY]
        assert sorted(e.host for e in entries if e) == sorted(p["status"]["podIP"] for p in await bed.refresh() if is_ready(p))
        entry = entries[0]
        assert entry is not None
        client = triton_aio.InferenceServerClient(f"{entry.host}:{entry.grpc_port}")
        try:
            result = await client.infer("llm", llm_inputs("delta epsilon", 3))
        finally:
            await client.close()
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output("delta epsilon", 3)
        await DeploymentScaler(bed.client).scale(REF, 5)
        await wait_for(lambda: summarise(watch.pods).unplaced == 0 and len(watch.pods) == 5, 30, "the unplaced pods gone from the watch")
    finally:
        stop.set()
        await task


async def test_missing_deployment_and_refused_verb_scale_nothing(bed: Bed) -> None:
    with pytest.raises(NotFoundError, match="Deployment default/no-such-model does not exist.*nothing was scaled"):
        await DeploymentScaler(bed.client).scale(DeploymentRef(NAMESPACE, "no-such-model"), 1)
    rule = {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]}
    await bed.client.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles", {
        "metadata": {"name": "scale-reader"}, "rules": [rule],
    })  # fmt: skip
    await bed.client.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings", {
        "metadata": {"name": "scale-reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scale-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": READER}],
    })  # fmt: skip
    async with bed.cluster.client(user=READER) as reader:
        for _ in range(50):  # the authorizer's cache takes the new binding within moments
            try:
                await reader.get(SCALE_PATH)
                break
            except ForbiddenError:
                await asyncio.sleep(0.1)
        assert (await reader.get(SCALE_PATH))["spec"]["replicas"] == 5, "the reader may get the scale"
        with pytest.raises(ForbiddenError, match='cannot update resource "deployments/scale"') as refused:
            await DeploymentScaler(reader).scale(REF, 1)
        assert refused.value.status == 403
        with pytest.raises(ForbiddenError, match='cannot list resource "pods"'):
            await reader.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
    assert (await bed.client.get(SCALE_PATH))["spec"]["replicas"] == 5


async def test_scale_to_zero_stops_every_server(bed: Bed) -> None:
    pods = await bed.refresh()
    assert pods, "the earlier tests leave pods running"
    ips = [p["status"]["podIP"] for p in pods]
    prefixes = [shm_prefix(p["metadata"]["uid"][:8]) for p in pods]
    assert all(list(Path("/dev/shm").glob(f"{prefix}*")) for prefix in prefixes), "each running pod's Python backend has its regions"
    await bed.scale(0)
    await bed.wait_pods(ready=0)
    await wait_for(lambda: not bed.kubelet.runs, 20, "the kubelet to stop every pod")
    assert not [path.name for prefix in prefixes for path in Path("/dev/shm").glob(f"{prefix}*")]
    for ip in ips:
        client = triton_aio.InferenceServerClient(f"{ip}:8001")
        try:
            with pytest.raises(InferenceServerException):
                await client.is_server_live()
        finally:
            await client.close()


async def test_actuator_applies_desired_states_and_routers_route_to_pods(bed: Bed, testbed: RouterBed) -> None:
    """The whole path but the container runtime: desired state in NATS -> scale subresource -> ReplicaSet ->
    scheduler -> loopback kubelet's tritonservers -> registry entries at pod IPs -> the router -> a client."""
    actuator = KubernetesActuator(testbed.bus, bed.client, {"llm": ModelDeployment(REF, SELECTOR["labelSelector"])}, interval_s=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(actuator.run(stop))
    try:
        await testbed.bus.desired.put("llm", scheduling_pb2.DesiredState(model="llm", horizontal=scheduling_pb2.HorizontalDecision(replicas=2)).SerializeToString())
        router = await testbed.router()
        await testbed.wait_routable("llm", 2)
        ready = [e for e in testbed.view.replicas.values() if e.model == "llm" and e.state == registry_pb2.REPLICA_STATE_READY]
        assert sorted(e.host for e in ready) == sorted(p["status"]["podIP"] for p in await bed.refresh() if is_ready(p))
        client = triton_aio.InferenceServerClient(router)
        try:
            for prompt in ("one two", "three four five"):
                result = await client.infer("llm", llm_inputs(prompt, 3))
                assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(prompt, 3)
        finally:
            await client.close()
        await testbed.bus.desired.put("llm", scheduling_pb2.DesiredState(model="llm", horizontal=scheduling_pb2.HorizontalDecision(replicas=0)).SerializeToString())
        await testbed.wait_routable("llm", 0)
        await bed.wait_pods(ready=0)
        await wait_for(lambda: not [e for e in testbed.view.replicas.values() if e.model == "llm"], 10, "the pods' registry entries gone")
    finally:
        stop.set()
        await task
        await actuator.release()


def oldest_first(live: Sequence[PodView], desired_replicas: int) -> list[str]:
    """The opposite of what the ReplicaSet would remove among ready pods (the newest), so the test tells them apart."""
    return [v.name for v in sorted(live, key=lambda v: v.created_at_unix_s)[: max(0, len(live) - desired_replicas)]]


async def test_scale_down_removes_the_drained_pod_and_not_another(bed: Bed, testbed: RouterBed) -> None:
    actuator = KubernetesActuator(
        testbed.bus, bed.client, {"llm": ModelDeployment(REF, SELECTOR["labelSelector"])}, interval_s=0.5, choose_drains=oldest_first,
        drain_propagation_s=0.2,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(actuator.run(stop))

    async def desire(replicas: int) -> None:
        await testbed.bus.desired.put("llm", scheduling_pb2.DesiredState(model="llm", horizontal=scheduling_pb2.HorizontalDecision(replicas=replicas)).SerializeToString())

    try:
        await desire(1)
        await bed.wait_pods(ready=1)
        first = bed.pods[0]["metadata"]["name"]
        await asyncio.sleep(1.1)  # creation times have whole seconds: the first pod must be older than the others
        await desire(3)
        await bed.wait_pods(ready=3)
        newer = {p["metadata"]["name"] for p in bed.pods} - {first}
        states: list[int] = []

        async def follow_first() -> None:
            """The first pod's registry states, as routers see them, until its entry is gone."""
            while (entry := testbed.view.replicas.get(f"llm.{first}")) is not None:
                if not states or states[-1] != entry.state:
                    states.append(entry.state)
                await asyncio.sleep(0.02)

        follower = asyncio.create_task(follow_first())
        await desire(2)
        await bed.wait_pods(ready=2)
        assert {p["metadata"]["name"] for p in bed.pods} == newer, "the drained (oldest) pod went; the ReplicaSet alone removes the newest"
        await asyncio.wait_for(follower, 10)
        assert states[:2] == [registry_pb2.REPLICA_STATE_READY, registry_pb2.REPLICA_STATE_DRAINING], "routers saw it drain before it went"
        await desire(0)
        await bed.wait_pods(ready=0)
    finally:
        stop.set()
        await task
        await actuator.release()
