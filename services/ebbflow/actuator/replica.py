"""One replica as the local actuator manages it, and how its phase reaches the registry and /metrics.

The actuator is the only writer of the replica registry (KV bucket
`replicas`): `RegistryWriter.record` is the one place a phase change is
written, with a lifecycle event beside it, and the per-phase gauge follows.
A write NATS does not take (it is away) is retried until it lands, the
newest state of each replica winning (runtime.landing): a replica that
becomes ready during an outage is in the registry, READY, once NATS is back.
After a reconnect the actuator writes every replica's entry again
(`reassert`), since the outage may have swallowed writes it thought stored.
Beside each entry it keeps the replica's record on this machine
(actuator.records), which outlives the actuator and NATS being away: what a
restarted actuator adopts the replica from.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from opentelemetry.context import Context
from prometheus_client import CollectorRegistry, Counter, Gauge

from ebbflow.actuator.core import Phase
from ebbflow.actuator.records import ReplicaRecord, remove_record, save_record
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.landing import Landing
from ebbflow.runtime.process import AdoptedProcess, ChildProcess
from ebbflow.v1 import registry_pb2, scheduling_pb2

log = logging.getLogger(__name__)

_STATE_BY_PHASE = {
    Phase.STARTING: registry_pb2.REPLICA_STATE_STARTING,
    Phase.READY: registry_pb2.REPLICA_STATE_READY,
    Phase.DRAINING: registry_pb2.REPLICA_STATE_DRAINING,
    Phase.STOPPED: registry_pb2.REPLICA_STATE_STOPPED,
    Phase.FAILED: registry_pb2.REPLICA_STATE_FAILED,
}
_EVENT_BY_PHASE = {
    Phase.STARTING: registry_pb2.LIFECYCLE_EVENT_KIND_STARTING,
    Phase.READY: registry_pb2.LIFECYCLE_EVENT_KIND_READY,
    Phase.DRAINING: registry_pb2.LIFECYCLE_EVENT_KIND_DRAINING,
    Phase.STOPPED: registry_pb2.LIFECYCLE_EVENT_KIND_STOPPED,
    Phase.FAILED: registry_pb2.LIFECYCLE_EVENT_KIND_FAILED,
}


@dataclass
class ManagedReplica:
    entry: registry_pb2.ReplicaEntry
    phase: Phase = Phase.STARTING
    child: ChildProcess | AdoptedProcess | None = None
    """Its tritonserver: a child of this actuator, or adopted from an earlier one (not our child)."""
    task: asyncio.Task[None] | None = None
    stopping: bool = False
    started_s: float = field(default_factory=time.monotonic)
    # A vertical reload in progress, and the last target that failed (not retried until the target changes).
    reloading: bool = False
    failed_vertical: tuple[int, int] | None = None
    # A move to another GPU (consolidation): the old replica serves until its replacement is ready, then drains.
    moving_to: str = ""
    replaces: str = ""
    # Its model's log slot (logs/triton-<model>-<slot>.log) and where this replica's output begins there.
    log_slot: int = -1
    log_offset: int = 0
    log_path: str = ""
    ready_s: float | None = None
    """When it became ready (monotonic seconds), None before."""
    end_reason: str = ""
    """Why the actuator stopped it unasked (e.g. not ready in time); empty when it died on its own."""
    trace_context: Context | None = None
    """The trace its start belongs to (the `actuate` span of a decision), when tracing is on."""

    @property
    def key(self) -> str:
        return subjects.replica_key(self.entry.model, self.entry.replica_id)

    @property
    def adopted(self) -> bool:
        return isinstance(self.child, AdoptedProcess)

    def record(self) -> ReplicaRecord | None:
        """What a later actuator needs to adopt it; None before its process exists."""
        if self.child is None:
            return None
        entry = registry_pb2.ReplicaEntry()
        entry.CopyFrom(self.entry)
        return ReplicaRecord(entry, self.child.started_at_s, self.log_path, self.log_slot, self.log_offset)


class ActuatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.replicas = Gauge("ebbflow_actuator_replicas", "Replicas by model and phase", ["model", "phase"], registry=registry)
        self.cold_start = Gauge("ebbflow_actuator_last_cold_start_seconds", "Start command to model ready, last replica", ["model"], registry=registry)
        self.failures = Counter("ebbflow_actuator_replica_failures", "Replicas that died or never became ready", ["model"], registry=registry)
        self.moves = Counter("ebbflow_actuator_moves", "Replicas moved to another GPU to free one (each a cold start)", ["model"], registry=registry)
        self.unplaced = Gauge("ebbflow_actuator_unplaced_replicas", "Desired replicas not started for want of a GPU slot", ["model"], registry=registry)
        self.restarts = Gauge(
            "ebbflow_actuator_crash_restarts", "Failed replica starts of a model since its crash-loop back-off last reset", ["model"], registry=registry
        )
        self.unready_since = Gauge(
            "ebbflow_actuator_unready_since_timestamp_seconds",
            "Unix time since which the model's ready replicas have differed from its desired count (0 while they match)", ["model"], registry=registry,
        )
        self.registry_backlog = Gauge(
            "ebbflow_actuator_registry_backlog", "Registry entries and lifecycle events not yet stored in NATS (retried until they are)", registry=registry
        )


class RegistryWriter:
    """Writes each phase change of the actuator's replicas to the registry, and exports replicas by phase."""

    def __init__(
        self,
        bus: Bus,
        metrics: ActuatorMetrics,
        replicas: Mapping[str, ManagedReplica],
        desired: Mapping[str, scheduling_pb2.DesiredState],
        state_dir: Path,
    ) -> None:
        self.bus = bus
        self.state_dir = state_dir
        """Where each replica's record is kept (actuator.records)."""
        self.metrics = metrics
        self.replicas = replicas
        self.desired = desired
        self.landing = Landing(bus, bus.replicas, "registry")
        self._events = itertools.count(1)
        self._unready_since: dict[str, float] = {}
        """Per model, when its ready count last stopped matching the desired count (for the EbbflowReplicasNotReady alert)."""
        self.wall_clock = time.time
        metrics.registry_backlog.set_function(lambda: float(self.landing.backlog))

    async def record(self, replica: ManagedReplica, phase: Phase, message: str = "") -> None:
        replica.phase = phase
        replica.entry.state = _STATE_BY_PHASE[phase]
        self.export()
        self.keep_record(replica)
        self.landing.record(replica.key, None if phase == Phase.STOPPED else replica.entry.SerializeToString())
        event = registry_pb2.LifecycleEvent(kind=_EVENT_BY_PHASE[phase], replica=replica.entry, time_unix_s=time.time(), message=message)
        self.landing.publish(subjects.lifecycle_subject(replica.entry.model), event.SerializeToString(), f"{replica.entry.replica_id}:{next(self._events)}")
        # Not connected: no attempt, so nothing (a start, a drain, shutdown) stalls on NATS timeouts.
        if not await self.landing.land() and replica.key in self.landing.writes:
            log.warning("NATS unavailable: %s is %s; the registry gets it once NATS takes it", replica.key, phase.value)

    def keep_record(self, replica: ManagedReplica) -> None:
        """The replica's record on this machine follows its entry; it goes once the replica is STOPPED. A record
        that cannot be written costs only adoption after a restart (the replica is then stopped), never the replica."""
        try:
            if replica.phase == Phase.STOPPED:
                remove_record(self.state_dir, replica.entry.replica_id)
            elif (record := replica.record()) is not None:
                save_record(self.state_dir, record)
        except OSError as error:
            log.warning("the record of replica %s could not be written (%s): a restarted actuator would not adopt it", replica.key, error)

    def reassert(self) -> None:
        """Write every replica's current entry again (NATS came back; it may have missed writes we believe stored)."""
        for replica in list(self.replicas.values()):
            if replica.phase != Phase.STOPPED:
                self.landing.record(replica.key, replica.entry.SerializeToString())
        self.landing.retry_now()

    def export(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for replica in self.replicas.values():
            key = (replica.entry.model, replica.phase.value)
            counts[key] = counts.get(key, 0) + 1
        for model in {r.entry.model for r in self.replicas.values()} | set(self.desired):
            for phase in Phase:
                self.metrics.replicas.labels(model, phase.value).set(counts.get((model, phase.value), 0))
            desired = self.desired.get(model)
            if counts.get((model, Phase.READY.value), 0) == (desired.horizontal.replicas if desired is not None else 0):
                self._unready_since.pop(model, None)
                self.metrics.unready_since.labels(model).set(0)
            else:
                self.metrics.unready_since.labels(model).set(self._unready_since.setdefault(model, self.wall_clock()))
