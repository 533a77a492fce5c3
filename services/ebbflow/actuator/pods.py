"""What a Kubernetes pod of a Triton Deployment is to ebbflow, pure: its phase, its address, whether it is unplaced.

The Kubernetes actuator (actuator/kubernetes.py) feeds the replica registry from a pod watch; this is the
translation, on the API server's JSON, with no I/O:

- a pod being deleted (deletionTimestamp) is DRAINING: Kubernetes has taken it out of the Endpoints and stops it
  within its grace period, so routers must stop sending to it;
- Ready (its readinessProbe: Triton's model-ready endpoint) is READY; a pod that runs but is not yet ready, or is
  scheduled and starting, is STARTING;
- a pod the scheduler could not place (PodScheduled False, Unschedulable: e.g. no node with a free
  `nvidia.com/gpu`) is STARTING and `unplaced`, with the scheduler's message as the reason: ebbflow reports it as
  unplaced, never as ready;
- Failed is FAILED, Succeeded STOPPED.

Its registry entry carries the pod IP and the container's Triton ports (named http/grpc/metrics, Triton's
8000/8001/8002 otherwise), so routers route to pods as they do to local replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from ebbflow.actuator.core import ActualReplica, Phase, reconcile
from ebbflow.v1 import registry_pb2

TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}

_STATE_BY_PHASE = {
    Phase.STARTING: registry_pb2.REPLICA_STATE_STARTING,
    Phase.READY: registry_pb2.REPLICA_STATE_READY,
    Phase.DRAINING: registry_pb2.REPLICA_STATE_DRAINING,
    Phase.STOPPED: registry_pb2.REPLICA_STATE_STOPPED,
    Phase.FAILED: registry_pb2.REPLICA_STATE_FAILED,
}


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    phase: Phase
    ip: str
    """The pod IP; empty before the kubelet reports one."""
    node: str
    """The node it is bound to; empty while unscheduled."""
    ports: Mapping[str, int]
    """Triton's http, grpc and metrics ports in the pod."""
    unplaced: bool
    """The scheduler found no node for it (e.g. no free GPU)."""
    reason: str
    """Why it is not ready, in Kubernetes' words (the scheduler's message, the kubelet's); empty when ready."""
    created_at_unix_s: float


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in pod.get("status", {}).get("conditions", []) or [] if c.get("type") == kind), None)


def _unix_s(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def triton_ports(pod: Mapping[str, Any]) -> dict[str, int]:
    ports = dict(TRITON_PORTS)
    containers = pod.get("spec", {}).get("containers", []) or []
    for port in (containers[0].get("ports", []) or []) if containers else []:
        if port.get("name") in ports:
            ports[port["name"]] = int(port["containerPort"])
    return ports


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    scheduled = _condition(pod, "PodScheduled")
    ready = _condition(pod, "Ready")
    unplaced = not spec.get("nodeName") and scheduled is not None and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
    phase_name = status.get("phase", "Pending")
    reason = ""
    if meta.get("deletionTimestamp"):
        phase, reason = Phase.DRAINING, "being deleted"
    elif phase_name == "Failed":
        phase, reason = Phase.FAILED, status.get("message") or status.get("reason") or "failed"
    elif phase_name == "Succeeded":
        phase, reason = Phase.STOPPED, "exited"
    elif ready is not None and ready.get("status") == "True" and status.get("podIP"):
        phase = Phase.READY
    else:
        phase = Phase.STARTING
        if unplaced:
            reason = f"unplaced: {scheduled.get('message', '')}".rstrip(": ") if scheduled else "unplaced"
        elif not spec.get("nodeName"):
            reason = "waiting for the scheduler"
        else:
            reason = "starting" if phase_name == "Pending" else "running, not ready"
    return PodView(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        phase=phase,
        ip=status.get("podIP", ""),
        node=spec.get("nodeName", ""),
        ports=triton_ports(pod),
        unplaced=unplaced,
        reason=reason,
        created_at_unix_s=_unix_s(meta.get("creationTimestamp")),
    )


def replica_entry(view: PodView, model: str) -> registry_pb2.ReplicaEntry | None:
    """The registry entry routers read for this pod, None while it has no address (nothing to route to)."""
    if not view.ip:
        return None
    return registry_pb2.ReplicaEntry(
        model=model,
        replica_id=view.name,
        host=view.ip,
        grpc_port=view.ports["grpc"],
        http_port=view.ports["http"],
        metrics_port=view.ports["metrics"],
        state=_STATE_BY_PHASE[view.phase],
        started_at_unix_s=view.created_at_unix_s,
        instances=1,
    )


@dataclass(frozen=True)
class Placement:
    """A model's pods as the actuator reports them."""

    ready: int
    starting: int
    unplaced: int
    draining: int
    failed: int


def summarise(views: Mapping[str, PodView] | list[PodView]) -> Placement:
    items = list(views.values()) if isinstance(views, Mapping) else list(views)
    return Placement(
        ready=sum(1 for v in items if v.phase == Phase.READY),
        starting=sum(1 for v in items if v.phase == Phase.STARTING and not v.unplaced),
        unplaced=sum(1 for v in items if v.unplaced and v.phase == Phase.STARTING),
        draining=sum(1 for v in items if v.phase == Phase.DRAINING),
        failed=sum(1 for v in items if v.phase == Phase.FAILED),
    )


def drain_choice(live: Sequence[PodView], desired_replicas: int) -> list[str]:
    """Which of the live (starting or ready) pods go when there are more than desired: the local actuator's rule
    (actuator.core.reconcile): starting ones first (unplaced included: they serve nobody), then the newest ready."""
    actual = [ActualReplica(v.name, v.phase, v.created_at_unix_s) for v in live if v.phase in (Phase.STARTING, Phase.READY)]
    return list(reconcile(desired_replicas, actual).drain)
