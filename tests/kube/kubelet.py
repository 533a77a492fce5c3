"""A loopback kubelet for tests: Nodes with `nvidia.com/gpu` capacity whose pods are real `tritonserver` processes.

There is no container runtime here, so this stands in for kubelet + runtime, and only for Triton pods. It registers
its Nodes, lists and watches every pod, and for each pod the scheduler bound to one of its Nodes:

- gives it its own loopback address (127.0.1.N; all of 127.0.0.0/8 is local), so every pod serves on Triton's usual
  ports 8000/8001/8002 (or the container's ports named http/grpc/metrics) as in a cluster;
- starts `tritonserver` the way the project starts replicas (ebbflow.runtime.triton: the interpreter's Python
  backend stub, the project's model repository), loading the models the container's args name with Triton's own
  `--load-model=NAME`, with the container's literal `env` values (e.g. EBBFLOW_TIME_SCALE);
- reports it Running with its podIP, and Ready from the container's readinessProbe (an httpGet, e.g. Triton's
  /v2/models/NAME/ready) or, without one, from Triton's model-ready endpoint; the probe runs every
  `probe_interval_s` (finer than the 1 s a real kubelet allows, so tests do not wait on it);
- when the pod is deleted (a deletionTimestamp: the ReplicaSet scaled down), stops the process group within the
  pod's grace period, removes its /dev/shm regions, and deletes the pod for good (as a kubelet does), with the
  pod's uid as precondition so a newer pod of the same name is never touched.

A pod whose tritonserver exits is reported Failed (the ReplicaSet replaces it); one this kubelet cannot run (no
`--load-model`) is reported Failed with the reason. The kubelet does not heartbeat: run the controller-manager
without `nodelifecycle` (tests/kube/cluster.py does); it lifts the not-ready taint admission puts on a new Node,
which that controller would.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Coroutine

import aiohttp

from ebbflow.actuator.leftovers import replica_markers
from ebbflow.kube.client import ConflictError, KubeClient, KubeError, KubeNotFoundError, WatchExpiredError
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.process import ChildProcess, spawn
from ebbflow.runtime.triton import default_model_repository, find_triton, prepare_backend_dir, remove_shm_regions, shm_prefix, triton_launch

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
_ADDRESSES_IN_USE: set[str] = set()
"""Pod addresses taken by any kubelet in this process."""


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def allocate_address() -> str:
    """A free 127.0.1.N on which Triton's ports can be bound (not held by another kubelet, here or elsewhere)."""
    for n in range(2, 255):
        address = f"127.0.1.{n}"
        if address in _ADDRESSES_IN_USE:
            continue
        if all(_port_free(address, port) for port in TRITON_PORTS.values()):
            _ADDRESSES_IN_USE.add(address)
            return address
    raise UnavailableError("no free loopback pod address in 127.0.1.2-254")


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
            return True
        except OSError:
            return False


def node_object(name: str, gpus: int) -> dict[str, Any]:
    resources = {"cpu": "16", "memory": "64Gi", "pods": "110", GPU_RESOURCE: str(gpus)}
    now = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "ebbflow.io/loopback-kubelet": "true"}},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "loopback kubelet", "lastHeartbeatTime": now, "lastTransitionTime": now}
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        },
    }


@dataclass
class PodRun:
    """One pod this kubelet runs."""

    namespace: str
    name: str
    uid: str
    node: str
    address: str = ""
    child: ChildProcess | None = None
    task: asyncio.Task[None] | None = None
    ready: bool = False
    deleting: bool = False
    started_s: float = field(default_factory=time.monotonic)
    ready_s: float | None = None

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"


class LoopbackKubelet:
    def __init__(
        self, client: KubeClient, state_dir: Path, nodes: dict[str, int], repository: Path | None = None, probe_interval_s: float = 0.2,
        exit_timeout_s: int = 3,
    ) -> None:  # fmt: skip
        self.client = client
        self.state_dir = state_dir
        self.nodes = dict(nodes)
        """Node name -> its nvidia.com/gpu capacity."""
        self.repository = repository or default_model_repository()
        self.probe_interval_s = probe_interval_s
        self.exit_timeout_s = exit_timeout_s
        self.install = find_triton()
        self.backend_dir = prepare_backend_dir(self.install, state_dir)
        self.runs: dict[str, PodRun] = {}
        """By pod uid."""
        self._watch: asyncio.Task[None] | None = None
        self._listed = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        """Stops and deletions under way."""

    async def start(self) -> None:
        for name, gpus in self.nodes.items():
            node = node_object(name, gpus)
            try:
                await self.client.create("/api/v1/nodes", node)
            except ConflictError:
                current = await self.client.get(f"/api/v1/nodes/{name}")
                node["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await self.client.replace(f"/api/v1/nodes/{name}", node)
            # A Node's status is its own subresource: set it there too, whatever the create kept.
            await self.client.merge_patch(f"/api/v1/nodes/{name}/status", {"status": node["status"]})
            # Admission taints a new Node not-ready; the node-lifecycle controller lifts it once the Node reports Ready.
            # That controller does not run here (nothing heartbeats), so the kubelet lifts it for its own Nodes.
            await self.client.merge_patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})
        self._watch = asyncio.create_task(self._watch_pods())
        await asyncio.wait_for(self._listed.wait(), 30)

    async def stop(self, delete_nodes: bool = True) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(self._stop_process(run) for run in list(self.runs.values())), return_exceptions=True)
        for run in self.runs.values():
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(run.task for run in self.runs.values() if run.task is not None), return_exceptions=True)
        self.runs.clear()
        if delete_nodes:
            for name in self.nodes:
                try:
                    await self.client.delete(f"/api/v1/nodes/{name}")
                except (KubeError, UnavailableError) as error:
                    log.warning("node %s not deleted: %s", name, error)

    async def _watch_pods(self) -> None:
        """List, then watch from the list's resourceVersion; a watch that ends resumes, one too old lists again."""
        version = ""
        while True:
            try:
                if not version:
                    listed = await self.client.get("/api/v1/pods")
                    version = listed["metadata"]["resourceVersion"]
                    for pod in listed.get("items", []):
                        self._on_pod("ADDED", pod)
                    self._listed.set()
                async for kind, pod in self.client.watch("/api/v1/pods", version, {"timeoutSeconds": "300"}):
                    version = pod.get("metadata", {}).get("resourceVersion", version)
                    if kind != "BOOKMARK":
                        self._on_pod(kind, pod)
            except WatchExpiredError:
                version = ""
            except (KubeError, UnavailableError) as error:
                log.warning("pod watch failed (%s); watching again", error)
                await asyncio.sleep(0.5)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        node = spec.get("nodeName", "")
        if node not in self.nodes:
            return
        uid = meta["uid"]
        run = self.runs.get(uid)
        if kind == "DELETED":
            if run is not None and not run.deleting:
                run.deleting = True
                self._spawn(self._stop_process(run))
            return
        if meta.get("deletionTimestamp"):
            if run is not None and not run.deleting:
                run.deleting = True
                grace_s = float(meta.get("deletionGracePeriodSeconds") or spec.get("terminationGracePeriodSeconds") or 30)
                self._spawn(self._terminate(run, grace_s))
            elif run is None:  # not ours to stop (a restart of this kubelet): only finish the deletion
                self._spawn(self._finish_deletion(PodRun(meta["namespace"], meta["name"], uid, node)))
            return
        if run is None and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            run = PodRun(meta["namespace"], meta["name"], uid, node)
            self.runs[uid] = run
            run.task = asyncio.create_task(self._run(run, pod))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self, run: PodRun, pod: dict[str, Any]) -> None:
        try:
            await self._run_pod(run, pod)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a pod this kubelet cannot run is reported, never a dead task
            log.warning("pod %s/%s failed: %s", run.namespace, run.name, error)
            await self._patch_status(run, {"phase": "Failed", "reason": "LoopbackKubeletError", "message": str(error)})

    async def _run_pod(self, run: PodRun, pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        args = [*container.get("command", []), *container.get("args", [])]
        models = [a.split("=", 1)[1] for a in args if a.startswith("--load-model=")]
        if not models:
            raise ValueError(f"container {container['name']} names no model: the loopback kubelet runs tritonserver with the args' --load-model=NAME")
        ports = dict(TRITON_PORTS)
        for port in container.get("ports", []):
            if port.get("name") in ports:
                ports[port["name"]] = int(port["containerPort"])
        env = {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
        run.address = allocate_address()
        launch = triton_launch(
            self.install, self.backend_dir, self.repository, models, ports["grpc"], ports["http"], ports["metrics"], self.exit_timeout_s,
            shm_prefix(run.uid[:8]), {**env, **replica_markers(self.state_dir, run.uid[:8])},
        )  # fmt: skip
        argv = [*launch.argv, f"--http-address={run.address}", f"--grpc-address={run.address}", f"--metrics-address={run.address}"]
        run.child = await spawn(f"tritonserver {run.namespace}/{run.name}", argv, self.state_dir / "logs" / f"{run.name}.log", launch.env, own_group=True)
        started = now_rfc3339()
        await self._patch_status(run, {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": run.address, "podIPs": [{"ip": run.address}], "startTime": started,
            "conditions": _conditions(False, started),
            "containerStatuses": [_container_status(container, False, {"running": {"startedAt": started}})],
        })  # fmt: skip
        probe_url = _probe_url(container, run.address, ports, models[0])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while run.child.running and not run.deleting:
                ready = await _probe(session, probe_url)
                if ready != run.ready:
                    run.ready = ready
                    if ready and run.ready_s is None:
                        run.ready_s = time.monotonic()
                    await self._patch_status(run, {
                        "conditions": _conditions(ready, now_rfc3339()), "containerStatuses": [_container_status(container, ready, {"running": {"startedAt": started}})],
                    })  # fmt: skip
                await asyncio.sleep(self.probe_interval_s)
        if not run.deleting:
            code = await run.child.wait()
            await self._cleanup(run)
            terminated = {"terminated": {"exitCode": code, "reason": "Error", "finishedAt": now_rfc3339()}}
            await self._patch_status(run, {
                "phase": "Failed", "message": f"tritonserver exited with code {code}", "conditions": _conditions(False, now_rfc3339()),
                "containerStatuses": [_container_status(container, False, terminated)],
            })  # fmt: skip

    async def _patch_status(self, run: PodRun, status: dict[str, Any]) -> None:
        try:
            await self.client.strategic_patch(f"{run.path}/status", {"status": status})
        except KubeNotFoundError:
            pass  # deleted meanwhile
        except (KubeError, UnavailableError) as error:
            log.warning("status of pod %s/%s not written: %s", run.namespace, run.name, error)

    async def _terminate(self, run: PodRun, grace_s: float) -> None:
        """The pod is being deleted: stop its server within the grace period, then delete the pod for good."""
        await self._stop_process(run, grace_s)
        await self._finish_deletion(run)

    async def _finish_deletion(self, run: PodRun) -> None:
        try:
            await self.client.delete(run.path, {"gracePeriodSeconds": 0, "preconditions": {"uid": run.uid}})
        except (KubeNotFoundError, ConflictError):
            pass  # already gone, or a newer pod of the same name
        except (KubeError, UnavailableError) as error:
            log.warning("pod %s/%s not deleted: %s", run.namespace, run.name, error)
        self.runs.pop(run.uid, None)

    async def _stop_process(self, run: PodRun, grace_s: float = 5.0) -> None:
        run.deleting = True
        if run.child is not None:
            await run.child.stop(max(1.0, grace_s))
        await self._cleanup(run)
        if run.task is not None and run.task is not asyncio.current_task():
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)

    async def _cleanup(self, run: PodRun) -> None:
        if run.child is not None:
            run.child.kill_group()
        remove_shm_regions(shm_prefix(run.uid[:8]))
        _ADDRESSES_IN_USE.discard(run.address)


def _conditions(ready: bool, at: str) -> list[dict[str, str]]:
    value = "True" if ready else "False"
    return [
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
        {"type": "ContainersReady", "status": value, "lastTransitionTime": at},
        {"type": "Ready", "status": value, "lastTransitionTime": at},
    ]


def _container_status(container: dict[str, Any], ready: bool, state: dict[str, Any]) -> dict[str, Any]:
    return {"name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": ready, "restartCount": 0, "state": state, "started": True}


def _probe_url(container: dict[str, Any], address: str, ports: dict[str, int], model: str) -> str:
    http_get = (container.get("readinessProbe") or {}).get("httpGet")
    if not http_get:
        return f"http://{address}:{ports['http']}/v2/models/{model}/ready"
    port = http_get.get("port", ports["http"])
    if isinstance(port, str):
        named = {p.get("name"): int(p["containerPort"]) for p in container.get("ports", [])}
        port = named.get(port, ports.get(port, ports["http"]))
    return f"http://{address}:{port}{http_get.get('path', '/')}"


async def _probe(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as response:
            return 200 <= response.status < 400
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False
