"""The local actuator: real `tritonserver` processes on this machine, the embedded default.

Level-triggered: every tick (and on every desired-state change) the pure
`reconcile` compares desired with actual and the shell starts or drains
replicas. It is the only writer of the replica registry, and it announces a
replica READY only after Triton's own model-readiness endpoint says so.

A model whose replicas keep dying is restarted with a growing wait
(actuator.backoff, Kubernetes' CrashLoopBackOff); each replica slot of a
model logs to one bounded file, and a replica that is gone leaves no process
of its group and no shared-memory region behind.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp
from google.protobuf.message import DecodeError
from nats.js.errors import KeyNotFoundError, NoKeysError
from prometheus_client import CollectorRegistry, Counter, Gauge

from ebbflow.actuator.backoff import BackoffSettings, CrashState, allowed_starts, describe, record_failure, record_ready, settle
from ebbflow.actuator.core import ActualReplica, Phase, live_routers, reconcile, routers_idle
from ebbflow.actuator.leftovers import replica_markers, sweep_leftovers
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus, unsubscribe, watch_bucket
from ebbflow.runtime.config import ActuatorConfig, PlacementConfig
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.process import ChildProcess, spawn
from ebbflow.runtime.triton import (
    default_model_repository,
    find_triton,
    last_error,
    log_tail,
    model_ready,
    new_replica_entry,
    prepare_backend_dir,
    publish_model_configs,
    read_model_configs,
    reload_with,
    remove_shm_regions,
    replica_launch,
    replica_log_path,
    shm_prefix,
    start_replica_log,
    vertical_of,
    with_vertical,
)
from ebbflow.scheduler.placement import GpuId, Placed, choose_slot, consolidation_move, largest_gpu_gb, parse_node, parse_slot, slot_name
from ebbflow.v1 import load_pb2, registry_pb2, scheduling_pb2, status_pb2

log = logging.getLogger(__name__)

TAIL_LINES = 12
"""Lines of a failed replica's log kept as the reason `ebbflow status` shows."""

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
    child: ChildProcess | None = None
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
    ready_s: float | None = None
    """When it became ready (monotonic seconds), None before."""
    end_reason: str = ""
    """Why the actuator stopped it unasked (e.g. not ready in time); empty when it died on its own."""

    @property
    def key(self) -> str:
        return subjects.replica_key(self.entry.model, self.entry.replica_id)


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


class LocalActuator:
    def __init__(
        self,
        config: ActuatorConfig,
        bus: Bus,
        state_dir: Path,
        metrics: ActuatorMetrics,
        say: Callable[[str], None] = lambda line: None,
        placement: PlacementConfig = PlacementConfig(),
    ) -> None:
        self.config = config
        self.nodes = [parse_node(text) for text in placement.nodes]
        """The GPU inventory; empty: replicas take no slot."""
        self.gpu_budget = int(placement.gpu_budget)
        self.max_moves_per_hour = placement.max_moves_per_hour
        self._moves: deque[float] = deque()
        """When recent consolidation moves started (monotonic seconds)."""
        self.unplaced: dict[str, str] = {}
        """Models with desired replicas that have no slot, and why."""
        self.bus = bus
        self.state_dir = state_dir
        self.metrics = metrics
        self.say = say
        self.install = find_triton()
        self.backend_dir = prepare_backend_dir(self.install, state_dir)
        self.repository = Path(config.model_repository) if config.model_repository else default_model_repository()
        self.desired: dict[str, scheduling_pb2.DesiredState] = {}
        self.replicas: dict[str, ManagedReplica] = {}
        self._kick = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._drains: set[asyncio.Task[None]] = set()
        self._routers_seen: dict[str, float] = {}
        self.model_configs = read_model_configs(self.repository)
        self._reloads: set[asyncio.Task[None]] = set()
        self.backoff = BackoffSettings(config.crash_backoff_initial_s, config.crash_backoff_max_s, config.crash_backoff_reset_after_s)
        self.crashes: dict[str, CrashState] = {}
        """Each model's failures since its back-off last reset (absent: none)."""
        self._crash_logs: dict[str, Path] = {}
        """The log of each model's last failed replica."""
        self._held_logged: dict[str, int] = {}

    # ---- registry -----------------------------------------------------------

    async def _record(self, replica: ManagedReplica, phase: Phase, message: str = "") -> None:
        replica.phase = phase
        replica.entry.state = _STATE_BY_PHASE[phase]
        self._export()
        if not self.bus.nc.is_connected:
            # NATS is gone (e.g. the whole process group got SIGTERM): don't stall shutdown on timeouts.
            log.warning("NATS unavailable: %s is %s but the registry was not updated", replica.key, phase.value)
            return
        try:
            if phase == Phase.STOPPED:
                await self.bus.replicas.delete(replica.key)
            else:
                await self.bus.replicas.put(replica.key, replica.entry.SerializeToString())
            event = registry_pb2.LifecycleEvent(kind=_EVENT_BY_PHASE[phase], replica=replica.entry, time_unix_s=time.time(), message=message)
            await self.bus.js.publish(subjects.lifecycle_subject(replica.entry.model), event.SerializeToString())
        except Exception as error:  # NATS away: the registry catches up on the next write
            log.warning("recording %s as %s failed: %s", replica.key, phase.value, error)

    def _export(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for replica in self.replicas.values():
            key = (replica.entry.model, replica.phase.value)
            counts[key] = counts.get(key, 0) + 1
        for model in {r.entry.model for r in self.replicas.values()} | set(self.desired):
            for phase in Phase:
                self.metrics.replicas.labels(model, phase.value).set(counts.get((model, phase.value), 0))

    async def forget_previous_run(self) -> None:
        """Registry entries left by an earlier run point at processes that died with it (PR_SET_PDEATHSIG);
        what those left behind (stubs' shared memory, a model's helper processes) is removed.

        Call before anything reads the registry, so nobody routes to them.
        """
        try:
            keys = await self.bus.replicas.keys()
        except NoKeysError:
            keys = []
        replica_ids = []
        for key in keys:
            try:
                entry = await self.bus.replicas.get(key)
                replica_ids.append(registry_pb2.ReplicaEntry.FromString(entry.value or b"").replica_id)
            except (KeyNotFoundError, DecodeError):
                pass
            await self.bus.replicas.delete(key)
        killed, removed = sweep_leftovers(self.state_dir, [rid for rid in replica_ids if rid])
        if killed or removed:
            self.say(f"an earlier run left {len(killed)} replica process(es) and {len(removed)} shared-memory region(s); removed them")

    async def publish_model_configs(self) -> None:
        await publish_model_configs(self.bus.models, self.repository)

    # ---- one replica's life ---------------------------------------------------

    def _base_vertical(self, model: str) -> tuple[int, int]:
        """What a replica loads from the repository: (instances, max_batch_size)."""
        config = self.model_configs.get(model)
        return vertical_of(config) if config is not None else (1, 0)

    def _wanted_vertical(self, model: str, desired: scheduling_pb2.DesiredState | None) -> tuple[int, int]:
        """Desired instances and batch size, 0 meaning the repository's. Batching is never switched on or off
        by a reload (max_batch_size 0 <-> > 0 changes the model's tensor shapes), only resized."""
        instances, max_batch = self._base_vertical(model)
        if desired is None:
            return instances, max_batch
        wanted_batch = desired.vertical.max_batch_size or max_batch
        if (wanted_batch == 0) != (max_batch == 0):
            wanted_batch = max_batch
        return desired.vertical.instances_per_replica or instances, wanted_batch

    # ---- GPU slots --------------------------------------------------------------

    def _slotted(self) -> list[tuple[ManagedReplica, GpuId]]:
        """This actuator's replicas that hold a GPU slot (draining ones still hold theirs), with the slot."""
        return [(r, gpu) for r in self.replicas.values() if (gpu := parse_slot(r.entry.gpu_slot)) is not None]

    def _used_gb(self, leaving_out: ManagedReplica | None = None) -> dict[GpuId, float]:
        """Memory held on each GPU by this actuator's replicas."""
        used: dict[GpuId, float] = {}
        for replica, gpu in self._slotted():
            if replica is not leaving_out:
                used[gpu] = used.get(gpu, 0.0) + replica.entry.gpu_memory_gb
        return used

    def _replica_memory(self, desired: scheduling_pb2.DesiredState) -> float:
        return desired.vertical.gpu_memory_gb or largest_gpu_gb(self.nodes)

    def _slot_for(self, model: str, memory_gb: float) -> tuple[str, str]:
        """A GPU slot for a new replica of `model` ("" and why when none fits)."""
        model_nodes: dict[str, int] = {}
        for replica, gpu in self._slotted():
            if replica.entry.model == model and not replica.stopping:
                model_nodes[gpu[0]] = model_nodes.get(gpu[0], 0) + 1
        gpu, why = choose_slot(self.nodes, self._used_gb(), model_nodes, memory_gb, self.gpu_budget)
        return (slot_name(gpu), "") if gpu is not None else ("", why)

    def _fits_in_place(self, replica: ManagedReplica, memory_gb: float) -> bool:
        """Whether the replica's GPU still has room when its memory becomes `memory_gb` (a vertical change)."""
        gpu = parse_slot(replica.entry.gpu_slot)
        if gpu is None:
            return True
        size = next(n.gpu_memory_gb for n in self.nodes if n.name == gpu[0])
        return self._used_gb(leaving_out=replica).get(gpu, 0.0) + memory_gb <= size + 1e-9

    async def _start(self, model: str, desired: scheduling_pb2.DesiredState, slot: str = "", memory: float = 0.0) -> ManagedReplica | None:
        """Start one replica (on `slot` when given); None when no GPU slot fits it (the reason kept in `unplaced`)."""
        if self.nodes and not slot:
            memory = self._replica_memory(desired)
            slot, why = self._slot_for(model, memory)
            if not slot:
                if self.unplaced.get(model) != why:
                    self.say(f"{model}: a desired replica cannot start: {why}")
                    log.warning("%s: a desired replica cannot start: %s", model, why)
                self.unplaced[model] = why
                return None
        # The entry records what the replica really runs: the repository's settings until a reload changes them.
        instances, max_batch = self._base_vertical(model)
        entry = new_replica_entry(model, instances=instances, max_batch_size=max_batch, generation=desired.generation)
        entry.gpu_slot, entry.gpu_memory_gb = slot, memory
        replica = ManagedReplica(entry=entry)
        self.replicas[replica.key] = replica
        await self._record(replica, Phase.STARTING)
        replica.task = asyncio.create_task(self._live(replica), name=f"replica {replica.key}")
        return replica

    async def _live(self, replica: ManagedReplica) -> None:
        entry = replica.entry
        launch = replica_launch(
            self.install, self.backend_dir, self.repository, entry, self.config.exit_timeout_s, self.config.time_scale,
            replica_markers(self.state_dir, entry.replica_id),
        )
        log_path = self._open_log(replica)
        try:
            replica.child = await spawn(f"tritonserver {replica.key}", launch.argv, log_path, launch.env, own_group=True)
            entry.pid = replica.child.pid
            if await self._wait_ready(replica):
                replica.ready_s = time.monotonic()
                self.crashes[entry.model] = record_ready(self.crashes.get(entry.model, CrashState()))
                cold_start_s = time.monotonic() - replica.started_s
                entry.ready_at_unix_s = time.time()
                self.metrics.cold_start.labels(entry.model).set(cold_start_s)
                self.say(f"replica {replica.key} serving on {entry.host}:{entry.grpc_port} (cold start {cold_start_s:.1f} s)")
                await self._record(replica, Phase.READY, f"cold start {cold_start_s:.1f} s")
                self._finish_move(replica)
            code = await replica.child.process.wait()
            if not replica.stopping:
                await self._failed(replica, replica.end_reason or exit_reason(code))
        except Exception as error:
            log.exception("replica %s failed", replica.key)
            if replica.child is not None:
                await replica.child.stop(1.0)
            if not replica.stopping:
                await self._failed(replica, f"{type(error).__name__}: {error}")
        finally:
            self._clean_up_after(replica)
            self._abandon_move(replica)
            if not replica.stopping:
                await self._record(replica, Phase.STOPPED)
                self.replicas.pop(replica.key, None)
                self._kick.set()

    # ---- failures: back-off, logs, leftovers ---------------------------------------

    def _open_log(self, replica: ManagedReplica) -> Path:
        """The replica's log: the lowest slot of its model no other replica holds, cut to replica_log_keep_bytes of
        earlier runs. A model's log files are then bounded by its peak replica count, however often they restart."""
        taken = {r.log_slot for r in self.replicas.values() if r.entry.model == replica.entry.model and r is not replica}
        replica.log_slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)
        path = replica_log_path(self.state_dir / "logs", replica.entry.model, replica.log_slot)
        header = f"replica {replica.entry.replica_id} starting at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        replica.log_offset = start_replica_log(path, self.config.replica_log_keep_bytes, header)
        return path

    def _log_path(self, replica: ManagedReplica) -> Path:
        return replica_log_path(self.state_dir / "logs", replica.entry.model, replica.log_slot)

    async def _failed(self, replica: ManagedReplica, reason: str) -> None:
        """A replica died or never became ready without being asked to stop: count it toward its model's back-off."""
        entry, now = replica.entry, time.monotonic()
        path = self._log_path(replica)
        tail = log_tail(path, replica.log_offset, TAIL_LINES)
        error = last_error(tail)
        if error:
            reason = f"{reason}: {error}"
        ready_for_s = now - replica.ready_s if replica.ready_s is not None else 0.0
        state = record_failure(self.crashes.get(entry.model, CrashState()), now, replica.started_s, ready_for_s, reason, tail, self.backoff)
        self.crashes[entry.model] = state
        self._crash_logs[entry.model] = path
        self.metrics.failures.labels(entry.model).inc()
        self.metrics.restarts.labels(entry.model).set(state.restarts)
        await self._record(replica, Phase.FAILED, f"{reason}; see {path}")
        self.say(f"replica {replica.key} failed ({reason}); {describe(state, now)}; log {path}")

    def _clean_up_after(self, replica: ManagedReplica) -> None:
        """Whatever the replica's server left: helper processes of its group (Python-backend stubs) and its
        shared-memory regions. Triton removes both on a clean exit; after SIGKILL or a crash nobody else does."""
        if replica.child is not None:
            replica.child.kill_group()
        removed = remove_shm_regions(shm_prefix(replica.entry.replica_id))
        if removed:
            log.info("replica %s left shared memory behind; removed %s", replica.key, ", ".join(removed))

    def _allowed_starts(self, model: str, mine: list[ManagedReplica], wanted: int) -> int:
        """How many of `wanted` new replicas the model's crash-loop back-off lets start now."""
        state = self.crashes.get(model)
        if state is None:
            return wanted
        now = time.monotonic()
        ready = [now - r.ready_s for r in mine if r.ready_s is not None and r.phase == Phase.READY and not r.stopping]
        state = settle(state, max(ready, default=0.0), self.backoff)
        if state.restarts == 0:
            self.crashes.pop(model, None)
            self.metrics.restarts.labels(model).set(0)
            return wanted
        self.crashes[model] = state
        starting = sum(1 for r in mine if r.phase == Phase.STARTING and not r.stopping)
        allowed = allowed_starts(state, now, wanted, starting)
        if allowed < wanted and self._held_logged.get(model) != state.restarts:
            self._held_logged[model] = state.restarts  # once per failure, not once per tick
            log.info("%s: %d of %d replica start(s) held: %s", model, wanted - allowed, wanted, describe(state, now))
        return allowed

    def _settle_idle(self, model: str, target: int, mine: list[ManagedReplica]) -> None:
        """A model scaled to zero with nothing left running has no crash-loop to report any more."""
        if target == 0 and not mine and self.crashes.pop(model, None) is not None:
            self.metrics.restarts.labels(model).set(0)

    def crash_loops(self) -> dict[str, status_pb2.CrashLoop]:
        """Each model's failures for `ebbflow status`, with the wait turned into wall-clock time."""
        now, wall = time.monotonic(), time.time()
        result: dict[str, status_pb2.CrashLoop] = {}
        for model, state in self.crashes.items():
            ready = [now - r.ready_s for r in self.replicas.values() if r.entry.model == model and r.ready_s is not None and r.phase == Phase.READY]
            state = settle(state, max(ready, default=0.0), self.backoff)
            if state.restarts == 0:
                continue
            waiting = state.backing_off and not state.proven and state.retry_at_s > now
            result[model] = status_pb2.CrashLoop(
                restarts=state.restarts,
                state=describe(state, now),
                next_try_unix_s=wall + (state.retry_at_s - now) if waiting else 0.0,
                reason=state.reason,
                log_tail=state.log_tail,
                log_path=str(self._crash_logs.get(model, "")),
                last_failure_unix_s=wall - (now - state.last_failure_s) if state.last_failure_s is not None else 0.0,
            )
        return result

    async def _apply_vertical(self, replica: ManagedReplica, wanted: tuple[int, int], memory_gb: float) -> None:
        """Reload the replica's model with the wanted instances and batch size; record what Triton then reports."""
        assert self._session is not None
        entry, config = replica.entry, self.model_configs.get(replica.entry.model)
        replica.reloading = True
        try:
            if config is None:
                raise UnavailableError(f"no config.pbtxt for {entry.model} in {self.repository}")
            applied = await reload_with(self._session, entry, with_vertical(config, *wanted))
            if applied != wanted:
                raise UnavailableError(f"Triton reports {applied[0]} instances and batch {applied[1]} after the reload, not {wanted[0]} and {wanted[1]}")
            entry.instances, entry.max_batch_size = applied
            if entry.gpu_slot:
                entry.gpu_memory_gb = memory_gb
            replica.failed_vertical = None
            self.say(f"replica {replica.key} reloaded: {applied[0]} instance(s), max batch {applied[1]} (verified)")
            await self._record(replica, Phase.READY, f"vertical: {applied[0]} instances, max batch {applied[1]}, verified")
        except Exception as error:  # the replica keeps serving with its old settings
            replica.failed_vertical = wanted
            log.warning("vertical change of %s to %s failed: %s", replica.key, wanted, error)
        finally:
            replica.reloading = False

    def _reconcile_vertical(self, model: str, desired: scheduling_pb2.DesiredState | None) -> None:
        """Ready replicas whose instances or batch size differ from the desired state are reloaded, one at a time per replica."""
        wanted = self._wanted_vertical(model, desired)
        for replica in self.replicas.values():
            entry = replica.entry
            if entry.model != model or replica.phase != Phase.READY or replica.stopping or replica.reloading:
                continue
            if (entry.instances, entry.max_batch_size) == wanted or replica.failed_vertical == wanted:
                continue
            memory = self._replica_memory(desired) if self.nodes and desired is not None else entry.gpu_memory_gb
            if not self._fits_in_place(replica, memory):
                replica.failed_vertical = wanted
                log.warning("vertical change of %s to %s skipped: its GPU %s lacks the memory", replica.key, wanted, entry.gpu_slot)
                continue
            task = asyncio.create_task(self._apply_vertical(replica, wanted, memory), name=f"vertical {replica.key}")
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _wait_ready(self, replica: ManagedReplica) -> bool:
        """Poll Triton's model-readiness endpoint until ready, process exit or ready_timeout_s."""
        assert replica.child is not None and self._session is not None
        deadline = time.monotonic() + self.config.ready_timeout_s
        while replica.child.running and not replica.stopping:
            if await model_ready(self._session, replica.entry):
                return True
            if time.monotonic() > deadline:
                log.warning("replica %s not ready after %.0f s; stopping it", replica.key, self.config.ready_timeout_s)
                replica.end_reason = f"not ready after {self.config.ready_timeout_s:.0f} s (ready_timeout_s)"
                await replica.child.stop(self.config.exit_timeout_s)
                return False
            await asyncio.sleep(0.1)
        return False

    async def _on_router_telemetry(self, message: Any) -> None:
        try:
            self._routers_seen[load_pb2.RouterTelemetry.FromString(message.data).router_id] = time.monotonic()
        except DecodeError:
            log.debug("ignoring undecodable router telemetry")

    async def _drain(self, replica: ManagedReplica, wait_for_routers: bool) -> None:
        """DESIGN.md "Drain": mark draining and let the routers finish with it, then SIGTERM
        (Triton finishes in-flight work within --exit-timeout-secs), then SIGKILL."""
        replica.stopping = True
        self._abandon_move(replica)
        if wait_for_routers:
            await self._drain_routers(replica)
        else:
            await self._record(replica, Phase.DRAINING)
        if replica.child is not None:
            await replica.child.stop(self.config.exit_timeout_s + 5)
        if replica.task is not None:
            await asyncio.gather(replica.task, return_exceptions=True)
        await self._record(replica, Phase.STOPPED)
        self.replicas.pop(replica.key, None)

    async def _drain_routers(self, replica: ManagedReplica) -> None:
        """Mark draining, then wait until every live router reports nothing of its own in flight there
        (at most drain_timeout_s; drain_propagation_s when no router is known to answer)."""
        idle: dict[str, bool] = {}
        acked = asyncio.Event()

        async def on_ack(message: Any) -> None:
            try:
                ack = registry_pb2.DrainAck.FromString(message.data)
            except DecodeError:
                return
            idle[ack.router_id] = ack.in_flight == 0
            acked.set()

        subject = subjects.drain_ack_subject(replica.entry.model, replica.entry.replica_id)
        subscription = await self.bus.nc.subscribe(subject, cb=on_ack) if self.bus.nc.is_connected else None
        try:
            await self._record(replica, Phase.DRAINING)
            routers = live_routers(self._routers_seen, time.monotonic())
            if not routers:
                await asyncio.sleep(self.config.drain_propagation_s)
                return
            deadline = time.monotonic() + self.config.drain_timeout_s
            while not routers_idle(routers, idle) and time.monotonic() < deadline:
                acked.clear()
                await wait_any(min(1.0, max(0.0, deadline - time.monotonic())), acked)
                routers &= live_routers(self._routers_seen, time.monotonic())  # a router that died owes no acknowledgement
            if not routers_idle(routers, idle):
                busy = sorted(r for r in routers if not idle.get(r))
                log.warning("drain of %s: routers %s did not report idle within %g s", replica.key, busy, self.config.drain_timeout_s)
        finally:
            await unsubscribe(subscription)

    # ---- reconcile -----------------------------------------------------------

    def _on_desired(self, key: str, value: bytes, revision: int) -> None:
        try:
            desired = scheduling_pb2.DesiredState.FromString(value)
        except DecodeError:
            log.warning("ignoring undecodable desired state for %s", key)
            return
        desired.generation = revision
        self.desired[key] = desired
        self._kick.set()

    def _on_desired_deleted(self, key: str) -> None:
        self.desired.pop(key, None)
        self._kick.set()

    async def reconcile_once(self) -> None:
        models = set(self.desired) | {r.entry.model for r in self.replicas.values()}
        in_sync = True
        for model in sorted(models):
            desired = self.desired.get(model)
            target = desired.horizontal.replicas if desired else 0
            mine = [r for r in self.replicas.values() if r.entry.model == model]
            # A replica chosen for draining, or being moved, is on its way out even before its drain task has run.
            actual = [ActualReplica(r.entry.replica_id, Phase.DRAINING if r.stopping or r.moving_to else r.phase, r.started_s) for r in mine]
            actions = reconcile(target, actual)
            self._reconcile_vertical(model, desired)
            self._settle_idle(model, target, mine)
            if actions.empty:
                self.metrics.unplaced.labels(model).set(0)
                self.unplaced.pop(model, None)
                continue
            in_sync = False
            allowed = self._allowed_starts(model, mine, actions.start)
            if allowed or actions.drain:
                log.info("%s: %s", model, actions.reason)
            started = 0
            for _ in range(allowed):
                if await self._start(model, desired or scheduling_pb2.DesiredState(model=model)) is None:
                    break
                started += 1
            missing = allowed - started
            self.metrics.unplaced.labels(model).set(missing)
            if not missing:
                self.unplaced.pop(model, None)
            for replica_id in actions.drain:
                self._drain_in_background(self.replicas[subjects.replica_key(model, replica_id)])
        await self.consolidate(in_sync)

    # ---- consolidation moves ----------------------------------------------------

    def _drain_in_background(self, replica: ManagedReplica) -> None:
        replica.stopping = True
        task = asyncio.create_task(self._drain(replica, wait_for_routers=True), name=f"drain {replica.key}")
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    def _finish_move(self, replacement: ManagedReplica) -> None:
        """The replacement is ready: the replica it replaces drains (make before break)."""
        old = self.replicas.get(replacement.replaces)
        replacement.replaces = ""
        if old is not None and not old.stopping:
            self.say(f"moved {old.entry.model} from {old.entry.gpu_slot} to {replacement.entry.gpu_slot}; draining {old.key}")
            old.moving_to = ""
            self._drain_in_background(old)

    def _abandon_move(self, replica: ManagedReplica) -> None:
        """A replacement that stops before it is ready ends its move: the old replica counts as live again."""
        if replica.replaces:
            old = self.replicas.get(replica.replaces)
            if old is not None:
                old.moving_to = ""
            replica.replaces = ""
        if replica.moving_to:
            replacement = self.replicas.get(replica.moving_to)
            if replacement is not None:
                replacement.replaces = ""
            replica.moving_to = ""

    async def consolidate(self, in_sync: bool) -> None:
        """Free a GPU by moving one ready replica (a cold start) when everything is in sync, no move is under way,
        and fewer than max_moves_per_hour moves started in the last hour."""
        if not self.nodes or not in_sync or self.max_moves_per_hour <= 0:
            return
        now = time.monotonic()
        while self._moves and now - self._moves[0] > 3600:
            self._moves.popleft()
        busy = any(r.phase != Phase.READY or r.stopping or r.moving_to or r.replaces or r.reloading for r in self.replicas.values())
        if busy or len(self._moves) >= self.max_moves_per_hour:
            return
        placed = [Placed(replica.key, replica.entry.model, gpu, replica.entry.gpu_memory_gb) for replica, gpu in self._slotted()]
        move = consolidation_move(self.nodes, placed)
        if move is None:
            return
        chosen, target = move
        old = self.replicas[chosen.replica_id]
        desired = self.desired.get(old.entry.model) or scheduling_pb2.DesiredState(model=old.entry.model)
        replacement = await self._start(old.entry.model, desired, slot_name(target), old.entry.gpu_memory_gb)
        if replacement is None:
            return
        old.moving_to, replacement.replaces = replacement.key, old.key
        self._moves.append(now)
        self.metrics.moves.labels(old.entry.model).inc()
        self.say(f"moving {old.key} from {old.entry.gpu_slot} to {slot_name(target)} to free a GPU ({len(self._moves)} of {self.max_moves_per_hour} moves this hour)")

    async def run(self, stop: asyncio.Event) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        watcher = asyncio.create_task(watch_bucket(self.bus.desired, self._on_desired, self._on_desired_deleted, stop=stop))
        telemetry = await self.bus.nc.subscribe(subjects.ROUTER_TELEMETRY, cb=self._on_router_telemetry)
        try:
            while not stop.is_set():
                await self.reconcile_once()
                self._kick.clear()
                await wait_any(self.config.reconcile_interval_s, stop, self._kick)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await unsubscribe(telemetry)

    async def shutdown(self) -> None:
        """Stop every replica in parallel (routers are already gone, so no propagation wait)."""
        replicas = list(self.replicas.values())
        await asyncio.gather(
            *(self._drain(r, wait_for_routers=False) for r in replicas if not r.stopping), *list(self._drains), return_exceptions=True
        )
        await asyncio.gather(*(r.task for r in replicas if r.task is not None), return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def exit_reason(code: int) -> str:
    """How tritonserver ended, in words (a negative code is the signal that killed it)."""
    if code < 0:
        try:
            return f"tritonserver killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"tritonserver killed by signal {-code}"
    return f"tritonserver exited with code {code}"
