"""One replica's life: its `tritonserver` process started, watched until ready and while it runs, cleaned up after.

A replica is announced READY only after Triton's own model-readiness
endpoint says so. One that dies, or is not ready within ready_timeout_s,
without having been asked to stop counts toward its model's crash-loop
back-off (actuator.crashes), with the last lines of its log as the reason.
Each replica slot of a model logs to one bounded file, and a replica that is
gone leaves no process of its group and no shared-memory region behind.
Stopping a replica on purpose is the drain protocol's (actuator.drain).

Replicas are the data plane: each tritonserver is started detached (its own
session and process group, no PR_SET_PDEATHSIG) and keeps serving when the
actuator dies or hangs. A restarted actuator adopts the ones that still serve
(`adopt`, on the rule of actuator.adoption) and follows them from then on as
it follows its own, by polling their pid since they are not its children.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Callable, Mapping

import aiohttp
import psutil
from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode
from tritonclient.grpc import model_config_pb2

from ebbflow.actuator.backoff import describe
from ebbflow.actuator.consolidation import abandon_move, finish_move
from ebbflow.actuator.core import Phase
from ebbflow.actuator.crashes import CrashLoops
from ebbflow.actuator.drain import Drains
from ebbflow.actuator.leftovers import remove_replica_leftovers, replica_markers
from ebbflow.actuator.records import ReplicaRecord
from ebbflow.actuator.replica import ActuatorMetrics, ManagedReplica, RegistryWriter
from ebbflow.actuator.slots import GpuSlots
from ebbflow.actuator.vertical import base_vertical
from ebbflow.runtime import tracing
from ebbflow.runtime.config import ActuatorConfig
from ebbflow.runtime.process import AdoptedProcess, spawn
from ebbflow.runtime.wire import address
from ebbflow.runtime.triton import (
    TritonInstall,
    last_error,
    log_tail,
    model_ready,
    new_replica_entry,
    replica_launch,
    replica_log_path,
    start_replica_log,
)
from ebbflow.v1 import scheduling_pb2

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)

TAIL_LINES = 12
"""Lines of a failed replica's log kept as the reason `ebbflow status` shows."""


def exit_reason(code: int | None) -> str:
    """How tritonserver ended, in words (a negative code is the signal that killed it; None: not our child, so the
    code went to its parent)."""
    if code is None:
        return "tritonserver (adopted) exited"
    if code < 0:
        try:
            return f"tritonserver killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"tritonserver killed by signal {-code}"
    return f"tritonserver exited with code {code}"


class ReplicaLifecycle:
    """Starts the actuator's replicas and follows each one's process until it is gone."""

    def __init__(
        self,
        config: ActuatorConfig,
        install: TritonInstall,
        backend_dir: Path,
        repository: Path,
        state_dir: Path,
        model_configs: Mapping[str, model_config_pb2.ModelConfig],
        replicas: dict[str, ManagedReplica],
        writer: RegistryWriter,
        slots: GpuSlots,
        crashes: CrashLoops,
        drains: Drains,
        kick: asyncio.Event,
        metrics: ActuatorMetrics,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.released = False
        """Set when the actuator lets go of its replicas without stopping them (LocalActuator.release)."""
        self.install = install
        self.backend_dir = backend_dir
        self.repository = repository
        self.state_dir = state_dir
        self.model_configs = model_configs
        self.replicas = replicas
        self.writer = writer
        self.slots = slots
        self.crashes = crashes
        self.drains = drains
        self.kick = kick
        """Set when a replica is gone on its own, so the reconcile loop replaces it without waiting for its tick."""
        self.metrics = metrics
        self.say = say
        self.session: aiohttp.ClientSession | None = None
        """Set while the actuator runs."""

    async def start(self, model: str, desired: scheduling_pb2.DesiredState, slot: str = "", memory: float = 0.0) -> ManagedReplica | None:
        """Start one replica (on `slot` when given); None when no GPU slot fits it (the reason kept in `unplaced`)."""
        if self.slots.nodes and not slot:
            memory = self.slots.replica_memory(desired)
            slot, why = self.slots.slot_for(model, memory)
            if not slot:
                if self.slots.unplaced.get(model) != why:
                    self.say(f"{model}: a desired replica cannot start: {why}")
                    log.warning("%s: a desired replica cannot start: %s", model, why)
                self.slots.unplaced[model] = why
                return None
        # The entry records what the replica really runs: the repository's settings until a reload changes them.
        instances, max_batch = base_vertical(self.model_configs, model)
        entry = new_replica_entry(model, instances=instances, max_batch_size=max_batch, generation=desired.generation)
        entry.gpu_slot, entry.gpu_memory_gb = slot, memory
        replica = ManagedReplica(entry=entry, trace_context=otel_context.get_current() if tracing.enabled() else None)
        self.replicas[replica.key] = replica
        await self.writer.record(replica, Phase.STARTING)
        replica.task = asyncio.create_task(self._live(replica), name=f"replica {replica.key}")
        return replica

    async def adopt(self, record: ReplicaRecord, process: psutil.Process, reason: str) -> ManagedReplica:
        """Take over a replica an earlier actuator started, which the OS and Triton have just confirmed
        (actuator.adoption): READY in the registry again, counted toward its model's desired replicas, and
        followed until it is gone."""
        entry = record.entry
        now_s, now_unix_s = time.monotonic(), time.time()
        replica = ManagedReplica(entry=entry, phase=Phase.READY, log_slot=record.log_slot, log_offset=record.log_offset, log_path=record.log_path)
        replica.started_s = now_s - max(0.0, now_unix_s - entry.started_at_unix_s)
        replica.ready_s = now_s - max(0.0, now_unix_s - entry.ready_at_unix_s) if entry.ready_at_unix_s else now_s
        replica.child = AdoptedProcess(f"tritonserver {replica.key}", process)
        self.replicas[replica.key] = replica
        await self.writer.record(replica, Phase.READY, f"adopted by a restarted actuator: {reason}")
        replica.task = asyncio.create_task(self._live(replica), name=f"replica {replica.key}")
        return replica

    async def _live(self, replica: ManagedReplica) -> None:
        """From start (or adoption) until gone: a replica that ends unasked counts as failed; whatever it left is removed."""
        try:
            if replica.child is None:
                await self._launch(replica)
            assert replica.child is not None
            code = await replica.child.wait()
            if not replica.stopping:
                await self._failed(replica, replica.end_reason or exit_reason(code))
        except Exception as error:
            log.exception("replica %s failed", replica.key)
            if replica.child is not None:
                await replica.child.stop(1.0)
            if not replica.stopping:
                await self._failed(replica, f"{type(error).__name__}: {error}")
        finally:
            if not (self.released and replica.child is not None and replica.child.running):
                self._clean_up_after(replica)
                abandon_move(self.replicas, replica)
                if not replica.stopping:
                    await self.writer.record(replica, Phase.STOPPED)
                    self.replicas.pop(replica.key, None)
                    self.kick.set()
            # else the actuator let go (SIGTERM of it alone): the replica keeps serving and the next actuator adopts it

    async def _launch(self, replica: ManagedReplica) -> None:
        """Start the replica's tritonserver, detached, record it on this machine, and announce it READY once Triton says
        so; with tracing on, as a `replica start` span from launch to ready in the trace of the decision that asked."""
        if not tracing.enabled():
            return await self._launch_untraced(replica)
        with TRACER.start_as_current_span("replica start", context=replica.trace_context) as span:
            tracing.set_attributes(span, {"ebbflow.model": replica.entry.model, "ebbflow.replica": replica.entry.replica_id})
            await self._launch_untraced(replica)
            if replica.ready_s is None:
                span.set_status(Status(StatusCode.ERROR, replica.end_reason or "not ready"))
            else:
                span.set_attribute("ebbflow.cold_start_s", replica.ready_s - replica.started_s)

    async def _launch_untraced(self, replica: ManagedReplica) -> None:
        entry = replica.entry
        launch = replica_launch(
            self.install, self.backend_dir, self.repository, entry, self.config.exit_timeout_s, self.config.time_scale,
            replica_markers(self.state_dir, entry.replica_id),
        )
        log_path = self._open_log(replica)
        replica.child = await spawn(f"tritonserver {replica.key}", launch.argv, log_path, launch.env, detached=True)
        entry.pid = replica.child.pid
        self.writer.keep_record(replica)
        if await self._wait_ready(replica):
            replica.ready_s = time.monotonic()
            self.crashes.ready(entry.model)
            cold_start_s = time.monotonic() - replica.started_s
            entry.ready_at_unix_s = time.time()
            self.metrics.cold_start.labels(entry.model).set(cold_start_s)
            self.say(f"replica {replica.key} serving on {address(entry)} (cold start {cold_start_s:.1f} s)")
            await self.writer.record(replica, Phase.READY, f"cold start {cold_start_s:.1f} s")
            old = finish_move(self.replicas, replica)
            if old is not None:
                self.say(f"moved {old.entry.model} from {old.entry.gpu_slot} to {replica.entry.gpu_slot}; draining {old.key}")
                self.drains.in_background(old)

    async def _wait_ready(self, replica: ManagedReplica) -> bool:
        """Poll Triton's model-readiness endpoint until ready, process exit or ready_timeout_s."""
        assert replica.child is not None and self.session is not None
        deadline = time.monotonic() + self.config.ready_timeout_s
        while replica.child.running and not replica.stopping:
            if await model_ready(self.session, replica.entry):
                return True
            if time.monotonic() > deadline:
                log.warning("replica %s not ready after %.0f s; stopping it", replica.key, self.config.ready_timeout_s)
                replica.end_reason = f"not ready after {self.config.ready_timeout_s:.0f} s (ready_timeout_s)"
                await replica.child.stop(self.config.exit_timeout_s)
                return False
            await asyncio.sleep(0.1)
        return False

    # ---- failures: logs, back-off, leftovers ---------------------------------------

    def _open_log(self, replica: ManagedReplica) -> Path:
        """The replica's log: the lowest slot of its model no other replica holds, cut to replica_log_keep_bytes of
        earlier runs. A model's log files are then bounded by its peak replica count, however often they restart."""
        taken = {r.log_slot for r in self.replicas.values() if r.entry.model == replica.entry.model and r is not replica}
        replica.log_slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)
        path = replica_log_path(self.state_dir / "logs", replica.entry.model, replica.log_slot)
        replica.log_path = str(path)
        header = f"replica {replica.entry.replica_id} starting at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        replica.log_offset = start_replica_log(path, self.config.replica_log_keep_bytes, header)
        return path

    async def _failed(self, replica: ManagedReplica, reason: str) -> None:
        """A replica died or never became ready without being asked to stop: count it toward its model's back-off."""
        now = time.monotonic()
        path = Path(replica.log_path)
        tail = log_tail(path, replica.log_offset, TAIL_LINES)
        error = last_error(tail)
        if error:
            reason = f"{reason}: {error}"
        state = self.crashes.failed(replica, now, reason, tail, path)
        await self.writer.record(replica, Phase.FAILED, f"{reason}; see {path}")
        self.say(f"replica {replica.key} failed ({reason}); {describe(state, now)}; log {path}")

    def _clean_up_after(self, replica: ManagedReplica) -> None:
        """Whatever the replica's server left: helper processes of its group (Python-backend stubs), any process
        still marked as the replica's (an adopted replica's group id is no longer safe to signal once its leader is
        gone), and its shared-memory regions. Triton removes them on a clean exit; after SIGKILL or a crash nobody else does."""
        if replica.child is not None:
            replica.child.kill_group()
        killed, removed = remove_replica_leftovers(self.state_dir, replica.entry.replica_id)
        if killed or removed:
            log.info("replica %s left processes %s and shared memory %s behind; removed", replica.key, sorted(killed), removed)
