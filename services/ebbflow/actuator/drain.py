"""Stopping a replica without losing a request: the drain protocol (docs/architecture.md "Drain").

The replica is marked DRAINING in the registry; every router stops sending it
new requests and acknowledges (DrainAck) with how many of its own are still
in flight there, again once that reaches zero. When every live router (one
heard from within ROUTER_TELEMETRY_FRESH_S, by its telemetry) is idle there, or
drain_timeout_s passes, the process gets SIGTERM (Triton finishes in-flight
work within --exit-timeout-secs), then SIGKILL, and the entry is removed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from google.protobuf.message import DecodeError

from ebbflow.actuator.consolidation import abandon_move
from ebbflow.actuator.core import Phase, live_routers, routers_idle
from ebbflow.actuator.replica import ManagedReplica, RegistryWriter
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus, unsubscribe
from ebbflow.runtime.config import ActuatorConfig
from ebbflow.runtime.loops import wait_any
from ebbflow.v1 import load_pb2, registry_pb2

log = logging.getLogger(__name__)


class Drains:
    """Drains the actuator's replicas, in the background or awaited, and knows which routers are alive."""

    def __init__(self, config: ActuatorConfig, bus: Bus, writer: RegistryWriter, replicas: dict[str, ManagedReplica]) -> None:
        self.config = config
        self.bus = bus
        self.writer = writer
        self.replicas = replicas
        self.tasks: set[asyncio.Task[None]] = set()
        """Drains under way in the background."""
        self._routers_seen: dict[str, float] = {}

    async def on_router_telemetry(self, message: Any) -> None:
        try:
            self._routers_seen[load_pb2.RouterTelemetry.FromString(message.data).router_id] = time.monotonic()
        except DecodeError:
            log.debug("ignoring undecodable router telemetry")

    def in_background(self, replica: ManagedReplica) -> None:
        replica.stopping = True
        task = asyncio.create_task(self.drain(replica, wait_for_routers=True), name=f"drain {replica.key}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, replica: ManagedReplica, wait_for_routers: bool) -> None:
        """Mark draining and let the routers finish with it, then SIGTERM
        (Triton finishes in-flight work within --exit-timeout-secs), then SIGKILL."""
        replica.stopping = True
        abandon_move(self.replicas, replica)
        if wait_for_routers:
            await self._wait_for_routers(replica)
        else:
            await self.writer.record(replica, Phase.DRAINING)
        if replica.child is not None:
            await replica.child.stop(self.config.exit_timeout_s + 5)
        if replica.task is not None:
            await asyncio.gather(replica.task, return_exceptions=True)
        await self.writer.record(replica, Phase.STOPPED)
        self.replicas.pop(replica.key, None)

    async def _wait_for_routers(self, replica: ManagedReplica) -> None:
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
            await self.writer.record(replica, Phase.DRAINING)
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
