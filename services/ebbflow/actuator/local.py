"""The local actuator: real `tritonserver` processes on this machine, the embedded default.

Level-triggered: every tick (and on every desired-state change) the pure
`reconcile` compares desired with actual and the shell starts or drains
replicas. It is the only writer of the replica registry, and it announces a
replica READY only after Triton's own model-readiness endpoint says so.

This module is the loop and the wiring; each job has its own module:
- actuator.lifecycle: a replica's process, from start until it is gone;
- actuator.drain: stopping one without losing requests (docs/architecture.md "Drain");
- actuator.vertical: instances and batch size changed in place (Triton's repository API);
- actuator.slots: which GPU a replica takes;
- actuator.consolidation: moving a replica to free a GPU;
- actuator.crashes: each model's crash-loop back-off (Kubernetes' CrashLoopBackOff);
- actuator.replica: the replica record and the registry writes;
- actuator.adoption, actuator.records, actuator.leftovers: replicas an earlier run left, adopted or removed.

Replicas outlive the actuator (runtime.process.spawn, detached): a restart
adopts the ones still serving instead of cold-starting the fleet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import aiohttp
import psutil
from google.protobuf.message import DecodeError
from nats.js.errors import KeyNotFoundError, NoKeysError
from opentelemetry.trace import Span

from ebbflow.actuator.adoption import AdoptionReport, Judgement, Verdict, identity_problem, judge
from ebbflow.actuator.backoff import BackoffSettings
from ebbflow.actuator.consolidation import Consolidation
from ebbflow.actuator.core import ActualReplica, Phase, reconcile
from ebbflow.actuator.crashes import CrashLoops
from ebbflow.actuator.drain import Drains
from ebbflow.actuator.leftovers import observe, owner_of, sweep_leftovers
from ebbflow.actuator.lifecycle import ReplicaLifecycle
from ebbflow.actuator.records import ReplicaRecord, load_records, remove_record
from ebbflow.actuator.replica import ActuatorMetrics, ManagedReplica, RegistryWriter
from ebbflow.actuator.slots import GpuSlots
from ebbflow.actuator.vertical import VerticalReloads
from ebbflow.runtime import subjects, tracing
from ebbflow.runtime.bus import Bus, unsubscribe, watch_bucket
from ebbflow.runtime.config import ActuatorConfig, PlacementConfig
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.triton import default_model_repository, find_triton, model_ready, prepare_backend_dir, publish_model_configs, read_model_configs
from ebbflow.v1 import registry_pb2, scheduling_pb2, status_pb2

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)

READY_PROBES = 3
"""Tries of Triton's readiness endpoint before a recorded replica counts as not ready: one slow answer on a busy
machine must not cost a warm replica."""
READY_PROBE_TIMEOUT_S = 2.0


@contextmanager
def _with_attributes(span_manager: ContextManager[Span], attributes: dict[str, object]) -> Iterator[Span]:
    with span_manager as span:
        tracing.set_attributes(span, attributes)
        yield span


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
        self.bus = bus
        self.state_dir = state_dir
        self.metrics = metrics
        self.say = say
        self.desired: dict[str, scheduling_pb2.DesiredState] = {}
        self.replicas: dict[str, ManagedReplica] = {}
        self.slots = GpuSlots(placement, self.replicas)
        install = find_triton()
        backend_dir = prepare_backend_dir(install, state_dir)
        self.repository = Path(config.model_repository) if config.model_repository else default_model_repository()
        self._kick = asyncio.Event()
        self.model_configs = read_model_configs(self.repository)
        settings = BackoffSettings(config.crash_backoff_initial_s, config.crash_backoff_max_s, config.crash_backoff_reset_after_s)
        self.crashes = CrashLoops(settings, metrics)
        self.writer = RegistryWriter(bus, metrics, self.replicas, self.desired, state_dir)
        self.drains = Drains(config, bus, self.writer, self.replicas)
        self.vertical = VerticalReloads(self.model_configs, self.repository, self.replicas, self.slots, self.writer, say)
        self.lifecycle = ReplicaLifecycle(
            config, install, backend_dir, self.repository, state_dir, self.model_configs, self.replicas,
            self.writer, self.slots, self.crashes, self.drains, self._kick, metrics, say,
        )
        self.consolidation = Consolidation(placement, self.slots, self.replicas, self.desired, self.lifecycle.start, metrics, say)

    @property
    def unplaced(self) -> dict[str, str]:
        """Models with desired replicas that have no GPU slot, and why."""
        return self.slots.unplaced

    # ---- registry -----------------------------------------------------------

    async def adopt_previous_run(self) -> AdoptionReport:
        """Take over the replicas an earlier run left serving and remove the rest, before anything reads the registry.

        Replicas outlive the actuator, so after a crash, a SIGKILL or a hang the next actuator finds them running.
        Each recorded one that the OS and Triton confirm (actuator.adoption) is adopted: READY in the registry again
        and counted toward its model's desired replicas, so a restart cold-starts nothing. Every other record, every
        registry entry not adopted (nobody may route to it), and every process or shared-memory region marked with
        this state directory but not an adopted replica's is removed.
        """
        started_s = time.monotonic()
        records, broken = load_records(self.state_dir)
        owner = owner_of(self.state_dir)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=READY_PROBE_TIMEOUT_S)) as session:
            judged = await asyncio.gather(*(self._judge(session, record, owner) for record in records))
        adopted: list[str] = []
        cleaned: dict[str, str] = {}
        for record, (judgement, process) in zip(records, judged):
            if judgement.verdict is Verdict.ADOPT and process is not None:
                await self.lifecycle.adopt(record, process, judgement.reason)
                adopted.append(record.replica_id)
            else:
                log.warning("replica %s (%s) of the earlier run is not adopted: %s", record.replica_id, record.entry.model, judgement.reason)
                cleaned[record.replica_id] = judgement.reason
                remove_record(self.state_dir, record.replica_id)
        for path in broken:
            path.unlink(missing_ok=True)
        stale = await self._delete_entries_except(set(adopted))
        killed, removed = sweep_leftovers(self.state_dir, set(cleaned) | set(stale), keep=adopted)
        report = AdoptionReport(tuple(adopted), cleaned, len(stale), len(killed), len(removed), time.monotonic() - started_s)
        if records or stale or killed or removed:
            self.say(report.summary())
            log.info("%s", report.summary())
        return report

    async def _judge(self, session: aiohttp.ClientSession, record: ReplicaRecord, owner: str) -> tuple[Judgement, psutil.Process | None]:
        """Adopt or clean one record: the OS first, then (only for the recorded process) Triton."""
        facts, process = observe(record.pid)
        ready = not identity_problem(record, facts, owner) and await self._answers_ready(session, record)
        return judge(record, facts, owner, ready), process

    @staticmethod
    async def _answers_ready(session: aiohttp.ClientSession, record: ReplicaRecord) -> bool:
        for attempt in range(READY_PROBES):
            if await model_ready(session, record.entry):
                return True
            if attempt + 1 < READY_PROBES:
                await asyncio.sleep(0.5)
        return False

    async def _delete_entries_except(self, adopted: set[str]) -> list[str]:
        """Delete the registry entries of replicas not adopted (they point at processes that are gone or going);
        returns their replica ids."""
        try:
            keys = await self.bus.replicas.keys()
        except NoKeysError:
            keys = []
        stale = []
        for key in keys:
            try:
                kv_entry = await self.bus.replicas.get(key)
                replica_id = registry_pb2.ReplicaEntry.FromString(kv_entry.value or b"").replica_id
            except (KeyNotFoundError, DecodeError):
                replica_id = ""
            if replica_id in adopted:
                continue
            await self.bus.replicas.delete(key)
            if replica_id:
                stale.append(replica_id)
        return stale

    async def publish_model_configs(self) -> None:
        await publish_model_configs(self.bus.models, self.repository)

    def crash_loops(self) -> dict[str, status_pb2.CrashLoop]:
        """Each model's failures for `ebbflow status`, with the wait turned into wall-clock time."""
        return self.crashes.report(self.replicas.values())

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
        self.writer.export()  # a changed desired count shows in the metrics before any replica changes phase
        models = set(self.desired) | {r.entry.model for r in self.replicas.values()}
        in_sync = True
        for model in sorted(models):
            desired = self.desired.get(model)
            target = desired.horizontal.replicas if desired else 0
            mine = [r for r in self.replicas.values() if r.entry.model == model]
            # A replica chosen for draining, or being moved, is on its way out even before its drain task has run.
            actual = [ActualReplica(r.entry.replica_id, Phase.DRAINING if r.stopping or r.moving_to else r.phase, r.started_s) for r in mine]
            actions = reconcile(target, actual)
            self.vertical.reconcile(model, desired)
            self.crashes.settle_idle(model, target, mine)
            if actions.empty:
                self.metrics.unplaced.labels(model).set(0)
                self.unplaced.pop(model, None)
                continue
            in_sync = False
            allowed = self.crashes.allowed_starts(model, mine, actions.start)
            if allowed or actions.drain:
                log.info("%s: %s", model, actions.reason)
            with self._actuating(model, desired, allowed, actions.drain):
                await self._act(model, desired, allowed, actions.drain)
        await self.consolidation.consolidate(in_sync)

    async def _act(self, model: str, desired: scheduling_pb2.DesiredState | None, allowed: int, drain: list[str]) -> None:
        started = 0
        for _ in range(allowed):
            if await self.lifecycle.start(model, desired or scheduling_pb2.DesiredState(model=model)) is None:
                break
            started += 1
        missing = allowed - started
        self.metrics.unplaced.labels(model).set(missing)
        if not missing:
            self.unplaced.pop(model, None)
        for replica_id in drain:
            self.drains.in_background(self.replicas[subjects.replica_key(model, replica_id)])

    def _actuating(self, model: str, desired: scheduling_pb2.DesiredState | None, starts: int, drains: list[str]) -> ContextManager[object]:
        """The `actuate` span, in the trace of the decision that asked for it (runtime.tracing); nothing when off or
        when there is nothing to start or drain (a crash back-off still waiting)."""
        if not tracing.enabled() or not (starts or drains):
            return nullcontext()
        span = TRACER.start_as_current_span("actuate", context=tracing.context_from(desired.traceparent if desired else ""))
        return _with_attributes(span, {
            "ebbflow.model": model, "ebbflow.generation": desired.generation if desired else 0,
            "ebbflow.replicas.desired": desired.horizontal.replicas if desired else 0, "ebbflow.starts": starts, "ebbflow.drains": len(drains),
        })

    async def run(self, stop: asyncio.Event) -> None:
        self.lifecycle.session = self.vertical.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        loaded = asyncio.Event()
        watcher = asyncio.create_task(
            watch_bucket(self.bus.desired, self._on_desired, self._on_desired_deleted, loaded=loaded, stop=stop, link=self.bus.link)
        )
        reasserter = asyncio.create_task(self._reassert_after_reconnects(stop))
        telemetry = await self.bus.nc.subscribe(subjects.ROUTER_TELEMETRY, cb=self.drains.on_router_telemetry)
        try:
            # Not before the desired states are read: an adopted replica would look undesired and be drained.
            await wait_any(None, stop, loaded)
            while not stop.is_set():
                await self.reconcile_once()
                self._kick.clear()
                await wait_any(self.config.reconcile_interval_s, stop, self._kick)
        finally:
            watcher.cancel()
            reasserter.cancel()
            await asyncio.gather(watcher, reasserter, return_exceptions=True)
            await unsubscribe(telemetry)

    async def _reassert_after_reconnects(self, stop: asyncio.Event) -> None:
        """After each NATS reconnect, write every replica's entry again: the registry is ours to keep right."""
        while not stop.is_set():
            reconnected = self.bus.link.reconnected
            await wait_any(3600.0, stop, reconnected)
            if reconnected.is_set():
                log.info("NATS is back: writing the registry entries of %d replica(s) again", len(self.replicas))
                self.writer.reassert()

    async def release(self) -> None:
        """Stop managing without stopping the fleet (SIGTERM of the actuator alone): the drains begun finish, the
        replicas keep serving and the next actuator adopts them (adopt_previous_run)."""
        await asyncio.gather(*list(self.drains.tasks), return_exceptions=True)
        self.lifecycle.released = True
        tasks = [r.task for r in self.replicas.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.writer.landing.close()
        if self.lifecycle.session is not None:
            await self.lifecycle.session.close()

    async def shutdown(self) -> None:
        """Stop every replica in parallel, adopted ones too (routers are already gone, so no propagation wait).
        Only a clean stop does this: a crashed or killed actuator leaves its replicas serving for the next one."""
        replicas = list(self.replicas.values())
        await asyncio.gather(
            *(self.drains.drain(r, wait_for_routers=False) for r in replicas if not r.stopping), *list(self.drains.tasks), return_exceptions=True
        )
        await asyncio.gather(*(r.task for r in replicas if r.task is not None), return_exceptions=True)
        await self.writer.landing.close()
        if self.lifecycle.session is not None:
            await self.lifecycle.session.close()
