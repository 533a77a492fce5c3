"""The Kubernetes actuator's two halves against the API server: scaling a Deployment, and watching its pods.

Not yet wired into `ebbflow serve`: the actuator that runs is the local one (actuator/local.py). These are the
parts a `kubernetes` actuator is built from, each tested against the real API server
(tests/integration/test_kubernetes.py):

- `DeploymentScaler.scale` writes a model's replica count through the Deployment's scale subresource with the
  `resourceVersion` it read (optimistic concurrency, as every Kubernetes controller does). A conflict (someone
  wrote the Deployment since: the deployment controller updating its status, another writer) is retried from a
  fresh read, a bounded number of times, never overwritten blindly. Desired == current writes nothing. A missing
  Deployment or a refused verb is a precise error and nothing is written.
- `PodWatch` lists a Deployment's pods by its selector and watches them from the list's resourceVersion (listing
  again when the watch is too old, retrying when the API server is away), keeping each pod's view
  (actuator/pods.py): what the replica registry is fed from, with pod IPs and Triton's ports, and which pods the
  scheduler left unplaced.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ebbflow.actuator.pods import PodView, pod_view
from ebbflow.kube.client import ConflictError, KubeError, KubeNotFoundError, WatchExpiredError
from ebbflow.runtime.errors import NotFoundError, UnavailableError

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
