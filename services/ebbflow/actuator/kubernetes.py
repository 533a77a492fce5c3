"""The Kubernetes actuator: desired states applied to Triton Deployments, their pods fed to the replica registry.

Not yet wired into `ebbflow serve` or the config: the actuator that runs is the local one (actuator/local.py).
What is here is tested against the real API server with the loopback kubelet (tests/integration/test_kubernetes.py):

- `DeploymentScaler.scale` writes a model's replica count through the Deployment's scale subresource with the
  `resourceVersion` it read (optimistic concurrency, as every Kubernetes controller does). A conflict (someone
  wrote the Deployment since: the deployment controller updating its status, another writer) is retried from a
  fresh read, a bounded number of times, never overwritten blindly. Desired == current writes nothing. A missing
  Deployment or a refused verb is a precise error and nothing is written.
- `PodWatch` lists a Deployment's pods by its selector and watches them from the list's resourceVersion (listing
  again when the watch is too old, retrying when the API server is away), keeping each pod's view
  (actuator/pods.py): what the replica registry is fed from, with pod IPs and Triton's ports, and which pods the
  scheduler left unplaced.
- `KubernetesActuator` joins them, level-triggered: every desired state in NATS is written to its model's
  Deployment (a model without one is left alone: no state is no decision), and every pod with an address becomes
  that model's registry entry (key `model.podname`), so routers route to pod IPs; a pod gone, or being deleted,
  leaves or drains its entry. A scale that fails (the API server away, a verb refused) is logged and held: nothing
  else changes and the next tick tries again. A restarted actuator takes over the entries an earlier one wrote
  (`adopt_entries`): the pods went on serving, and an entry whose pod went meanwhile is deleted. Vertical changes
  are not here yet.
- Scale-down removes the pods ebbflow chose (`drain_choice`, or the rule passed in), not the ReplicaSet's pick:
  each chosen ready pod is marked DRAINING in the registry (routers stop sending to it), after
  `drain_propagation_s` its Triton unloads the model (Triton lets the requests in flight finish first), its
  readiness probe (the model-ready endpoint) then fails, and only once the pod is seen not ready is the scale
  written: the ReplicaSet deletes not-ready pods before ready ones. Kubernetes 1.20 has no
  `controller.kubernetes.io/pod-deletion-cost` (1.22), so readiness is the lever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import aiohttp

from google.protobuf.message import DecodeError
from nats.js.errors import NoKeysError

from ebbflow.actuator.core import Phase
from ebbflow.actuator.pods import PodView, drain_choice, pod_view, replica_entry
from ebbflow.kube.client import ConflictError, KubeError, KubeNotFoundError, WatchExpiredError
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus, watch_bucket
from ebbflow.runtime.errors import EbbflowError, NotFoundError, UnavailableError
from ebbflow.runtime.loops import wait_any
from ebbflow.v1 import registry_pb2, scheduling_pb2

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]


class KubeApi(Protocol):
    """The calls the Kubernetes actuator makes (ebbflow.kube.client.KubeClient has them)."""

    async def get(self, path: str, params: dict[str, str] | None = None) -> JsonObject: ...

    async def replace(self, path: str, body: JsonObject) -> JsonObject: ...

    def watch(self, path: str, resource_version: str, params: dict[str, str] | None = None) -> Any: ...


@dataclass(frozen=True)
class DeploymentRef:
    namespace: str
    name: str

    @property
    def path(self) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.name}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ScaleOutcome:
    replicas: int
    """The replica count the scale subresource holds after the call."""
    previous: int
    written: bool
    """False when it already held the desired count."""
    conflicts: int
    """Writes refused for a stale resourceVersion, each retried from a fresh read."""


class DeploymentScaler:
    def __init__(self, api: KubeApi, max_conflicts: int = 5) -> None:
        self.api = api
        self.max_conflicts = max_conflicts

    async def scale(self, deployment: DeploymentRef, replicas: int) -> ScaleOutcome:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        conflicts = 0
        while True:
            try:
                scale = await self.api.get(f"{deployment.path}/scale")
            except KubeNotFoundError:
                raise NotFoundError(
                    f"Deployment {deployment} does not exist: apply the model's Triton Deployment first; nothing was scaled"
                ) from None
            previous = int(scale.get("spec", {}).get("replicas") or 0)
            if previous == replicas:
                return ScaleOutcome(replicas, previous, False, conflicts)
            scale["spec"] = {**scale.get("spec", {}), "replicas": replicas}  # metadata.resourceVersion stays: the precondition
            try:
                written = await self.api.replace(f"{deployment.path}/scale", scale)
            except ConflictError:
                conflicts += 1
                if conflicts > self.max_conflicts:
                    raise UnavailableError(
                        f"Deployment {deployment} changed under every one of {conflicts} scale writes; not scaled, retry on the next tick"
                    ) from None
                log.info("scale of %s conflicted (%d): reading it again", deployment, conflicts)
                continue
            return ScaleOutcome(int(written.get("spec", {}).get("replicas") or 0), previous, True, conflicts)


class PodWatch:
    """A Deployment's pods, kept current from a list and a watch; `on_change` is called after each change."""

    def __init__(self, api: KubeApi, namespace: str, selector: str, on_change: Callable[[], None] = lambda: None, retry_s: float = 0.5) -> None:
        self.api = api
        self.namespace = namespace
        self.selector = selector
        """A label selector, e.g. `app=triton-llm` (the Deployment's matchLabels)."""
        self.on_change = on_change
        self.retry_s = retry_s
        self.pods: dict[str, PodView] = {}
        """By pod name."""
        self.listed = asyncio.Event()
        self.error = ""
        """The last failure to list or watch, empty once it works again."""

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    async def run(self, stop: asyncio.Event) -> None:
        task = asyncio.create_task(self._follow())
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _follow(self) -> None:
        version = ""
        params = {"labelSelector": self.selector}
        while True:
            try:
                if not version:
                    listed = await self.api.get(self.path, params)
                    version = listed["metadata"]["resourceVersion"]
                    self.pods = {p["metadata"]["name"]: pod_view(p) for p in listed.get("items", [])}
                    self.error = ""
                    self.listed.set()
                    self.on_change()
                async for kind, pod in self.api.watch(self.path, version, {**params, "timeoutSeconds": "300"}):
                    version = pod.get("metadata", {}).get("resourceVersion", version)
                    if kind == "BOOKMARK":
                        continue
                    name = pod["metadata"]["name"]
                    if kind == "DELETED":
                        self.pods.pop(name, None)
                    else:
                        self.pods[name] = pod_view(pod)
                    self.on_change()
            except WatchExpiredError:
                version = ""  # too old: list again
            except (KubeError, UnavailableError) as error:
                self.error = str(error)
                log.warning("watching pods %s in %s failed (%s); trying again", self.selector, self.namespace, error)
                await asyncio.sleep(self.retry_s)


@dataclass(frozen=True)
class ModelDeployment:
    """Where a model's Triton pods come from."""

    deployment: DeploymentRef
    selector: str
    """The Deployment's pod label selector, e.g. `app=triton-llm`."""


class KubernetesActuator:
    def __init__(
        self,
        bus: Bus,
        api: KubeApi,
        models: dict[str, ModelDeployment],
        interval_s: float = 1.0,
        choose_drains: Callable[[Sequence[PodView], int], list[str]] = drain_choice,
        drain_propagation_s: float = 1.0,
        unready_timeout_s: float = 30.0,
    ) -> None:
        self.bus = bus
        self.choose_drains = choose_drains
        self.drain_propagation_s = drain_propagation_s
        self.unready_timeout_s = unready_timeout_s
        self.draining: set[str] = set()
        """Pods (by name) this actuator is removing: DRAINING in the registry, no longer counted as live."""
        self.api = api
        self.models = dict(models)
        self.interval_s = interval_s
        self.scaler = DeploymentScaler(api)
        self.desired: dict[str, scheduling_pb2.DesiredState] = {}
        self.scale_errors: dict[str, str] = {}
        """Per model, why its last scale did not happen (held until a later tick succeeds)."""
        self._changed = asyncio.Event()
        self.watches = {
            model: PodWatch(api, target.deployment.namespace, target.selector, on_change=self._changed.set) for model, target in self.models.items()
        }
        self._written: dict[str, bytes] = {}
        """Registry entries as last stored, by key."""

    def _on_desired(self, key: str, value: bytes, revision: int) -> None:
        try:
            desired = scheduling_pb2.DesiredState.FromString(value)
        except DecodeError:
            log.warning("ignoring undecodable desired state for %s", key)
            return
        desired.generation = revision
        self.desired[key] = desired
        self._changed.set()

    def _on_desired_deleted(self, key: str) -> None:
        self.desired.pop(key, None)

    def unplaced(self) -> dict[str, list[str]]:
        """Per model, why each pod the scheduler could not place is waiting (e.g. no free nvidia.com/gpu)."""
        return {model: [v.reason for v in watch.pods.values() if v.unplaced] for model, watch in self.watches.items()}

    async def run(self, stop: asyncio.Event) -> None:
        loaded = asyncio.Event()
        tasks = [
            asyncio.create_task(watch_bucket(self.bus.desired, self._on_desired, self._on_desired_deleted, loaded=loaded, stop=stop, link=self.bus.link)),
            *(asyncio.create_task(watch.run(stop)) for watch in self.watches.values()),
        ]
        try:
            await wait_any(None, loaded, stop)
            await self.adopt_entries()
            while not stop.is_set():
                self._changed.clear()
                await self.reconcile_once()
                await wait_any(self.interval_s, self._changed, stop)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def adopt_entries(self) -> None:
        """Take over the registry entries an earlier run wrote for these models: each is rewritten from its pod, or
        deleted when its pod is gone, rather than left behind (the pods themselves simply go on; nothing restarts)."""
        try:
            keys = await self.bus.replicas.keys()
        except NoKeysError:
            return
        except Exception as error:  # NATS away: entries of pods gone meanwhile stay until a later restart
            log.warning("registry entries of an earlier run not read (%s)", error)
            return
        for key in keys:
            if key.split(".", 1)[0] in self.models:
                self._written.setdefault(key, b"")

    async def reconcile_once(self) -> None:
        for model, target in self.models.items():
            desired = self.desired.get(model)
            if desired is not None:
                try:
                    await self._drain_extra(model, desired.horizontal.replicas)
                    outcome = await self.scaler.scale(target.deployment, desired.horizontal.replicas)
                    self.scale_errors.pop(model, None)
                    if outcome.written:
                        log.info("scaled %s to %d (from %d, %d conflicts)", target.deployment, outcome.replicas, outcome.previous, outcome.conflicts)
                except EbbflowError as error:
                    if self.scale_errors.get(model) != str(error):
                        log.warning("holding %s at its current scale: %s", model, error)
                    self.scale_errors[model] = str(error)
            await self._sync_registry(model, self.watches[model].pods)

    async def _drain_extra(self, model: str, desired_replicas: int) -> None:
        """Before a scale-down, make the pods chosen to go not ready (see the module's docstring)."""
        watch = self.watches[model]
        if not watch.listed.is_set():
            raise UnavailableError(f"the pods of {model} are not listed yet; not scaling down blind")
        live = [v for v in watch.pods.values() if v.phase in (Phase.STARTING, Phase.READY) and v.name not in self.draining]
        if len(live) <= desired_replicas:
            return
        chosen = [watch.pods[name] for name in self.choose_drains(live, desired_replicas)]
        ready = [v for v in chosen if v.phase == Phase.READY and v.ip]
        if not ready:
            return  # starting or unplaced pods: the ReplicaSet removes those first anyway
        self.draining.update(v.name for v in ready)
        await self._sync_registry(model, watch.pods)
        await asyncio.sleep(self.drain_propagation_s)  # routers stop sending before the model goes
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.unready_timeout_s)) as session:
            for view in ready:
                url = f"http://{view.ip}:{view.ports['http']}/v2/repository/models/{model}/unload"
                try:
                    async with session.post(url, json={}) as response:
                        if response.status != 200:
                            log.warning("unloading %s on pod %s answered %d: %s", model, view.name, response.status, await response.text())
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    log.warning("unloading %s on pod %s failed (%s); waiting for it to turn not ready anyway", model, view.name, error)
        deadline = time.monotonic() + self.unready_timeout_s
        while any(watch.pods.get(v.name) is not None and watch.pods[v.name].phase == Phase.READY for v in ready):
            if time.monotonic() > deadline:
                raise UnavailableError(f"pods {[v.name for v in ready]} of {model} still ready {self.unready_timeout_s:.0f} s after unloading; not scaling down")
            await asyncio.sleep(0.05)

    async def _sync_registry(self, model: str, pods: dict[str, PodView]) -> None:
        """The model's registry entries follow its pods: one per pod with an address, none for the others."""
        if not self.watches[model].listed.is_set():
            return
        wanted = {}
        for view in pods.values():
            entry = replica_entry(view, model)
            if entry is not None and view.name in self.draining:
                entry.state = registry_pb2.REPLICA_STATE_DRAINING
            if entry is not None:
                wanted[subjects.replica_key(model, view.name)] = entry.SerializeToString()
        try:
            for key, value in wanted.items():
                if self._written.get(key) != value:
                    await self.bus.replicas.put(key, value)
                    self._written[key] = value
            self.draining &= set(pods)  # a pod gone is drained
            for key in [k for k in self._written if k.startswith(f"{model}.") and k not in wanted]:
                await self.bus.replicas.delete(key)
                del self._written[key]
        except Exception as error:  # NATS away: the next tick writes what is still missing
            log.warning("registry entries of %s not stored (%s); retrying", model, error)

    async def release(self) -> None:
        """Remove this actuator's registry entries (the pods keep serving; a later actuator writes them again)."""
        for key in list(self._written):
            try:
                await self.bus.replicas.delete(key)
            except Exception as error:
                log.warning("registry entry %s not removed: %s", key, error)
            del self._written[key]
