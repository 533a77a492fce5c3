"""Service discovery through NATS: each service process announces its addresses in the KV bucket `services`.

An announcement (`ServiceInstance`, key `<service>.<instance_id>`) is put again
every HEARTBEAT_S; the bucket's TTL (subjects.SERVICES_TTL_S) removes one that
stops, so a SIGKILLed service's address disappears by itself and a clean stop
deletes its key at once. Readers (the CLI, the forecaster looking for a
collector, `ebbflow status`) list the bucket and keep the fresh entries, the
newest first. This is the registry a Kubernetes Service or Consul would be;
on Kubernetes the same announcements carry pod addresses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from typing import Callable

from google.protobuf.message import DecodeError
from nats.js.errors import KeyNotFoundError, NoKeysError

from ebbflow import __version__
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.loops import wait_any
from ebbflow.v1 import discovery_pb2

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
"""How often a service puts its announcement again (well inside the bucket's TTL)."""

SERVICE_NAMES = ("router", "collector", "forecaster", "scheduler", "actuator")
"""The services `ebbflow serve` runs, in the order `ebbflow up` starts them."""


def instance_id(service: str, pid: int | None = None) -> str:
    """`<host>-<pid>`, with the characters a KV key cannot hold replaced."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]
    return f"{host}-{pid or os.getpid()}"


def key_of(service: str, instance: str) -> str:
    return f"{service}.{instance}"


class Announcer:
    """Keeps one service's announcement in the bucket while it runs; deletes it at stop."""

    def __init__(self, bus: Bus, announcement: discovery_pb2.ServiceInstance) -> None:
        self.bus = bus
        self.announcement = announcement
        announcement.version = announcement.version or __version__
        announcement.host = announcement.host or socket.gethostname()
        announcement.pid = announcement.pid or os.getpid()
        announcement.started_unix_s = announcement.started_unix_s or time.time()
        self.key = key_of(announcement.service, announcement.instance_id)

    async def put(self) -> None:
        self.announcement.heartbeat_unix_s = time.time()
        await self.bus.services.put(self.key, self.announcement.SerializeToString())

    async def run(self, stop: asyncio.Event) -> None:
        """Announce every HEARTBEAT_S until stop (NATS away: try again next beat), then withdraw."""
        while not stop.is_set():
            try:
                await self.put()
            except Exception as error:  # NATS away: the TTL may drop us meanwhile; the next beat puts us back
                log.debug("announcing %s failed: %s", self.key, error)
            await wait_any(HEARTBEAT_S, stop)
        try:
            await self.bus.services.delete(self.key)
        except Exception as error:
            log.debug("withdrawing %s failed (the TTL removes it): %s", self.key, error)


async def list_services(bus: Bus, max_age_s: float = subjects.SERVICES_TTL_S) -> list[discovery_pb2.ServiceInstance]:
    """Every announced service whose last heartbeat is under max_age_s old, the newest first."""
    found = []
    now = time.time()
    for key, value in await _entries(bus, lambda key: not key.startswith("supervisor.")):
        try:
            instance = discovery_pb2.ServiceInstance.FromString(value)
        except DecodeError:
            log.warning("ignoring undecodable announcement %s", key)
            continue
        if now - instance.heartbeat_unix_s <= max_age_s:
            found.append(instance)
    return sorted(found, key=lambda i: (i.service, -i.heartbeat_unix_s))


async def find(bus: Bus, service: str) -> list[discovery_pb2.ServiceInstance]:
    """The live instances of one service, the most recently started first."""
    return sorted((i for i in await list_services(bus) if i.service == service), key=lambda i: -i.started_unix_s)


async def supervisors(bus: Bus, max_age_s: float = subjects.SERVICES_TTL_S) -> list[discovery_pb2.Supervisor]:
    found = []
    now = time.time()
    for key, value in await _entries(bus, lambda key: key.startswith("supervisor.")):
        try:
            supervisor = discovery_pb2.Supervisor.FromString(value)
        except DecodeError:
            continue
        if now - supervisor.heartbeat_unix_s <= max_age_s:
            found.append(supervisor)
    return found


async def _entries(bus: Bus, wanted: Callable[[str], bool]) -> list[tuple[str, bytes]]:
    try:
        keys = await bus.services.keys()
    except NoKeysError:
        return []
    entries = []
    for key in keys:
        if not wanted(key):
            continue
        try:
            entry = await bus.services.get(key)
        except KeyNotFoundError:
            continue  # expired between the listing and the read
        if entry.value:
            entries.append((key, entry.value))
    return entries


async def wait_for_service(bus: Bus, service: str, stop: asyncio.Event, every_s: float = 1.0) -> discovery_pb2.ServiceInstance | None:
    """The newest live instance of `service`, waiting (and saying so once) until one announces itself; None at stop."""
    told = False
    while not stop.is_set():
        try:
            instances = await find(bus, service)
        except Exception as error:  # NATS away
            instances = []
            log.debug("looking for %s failed: %s", service, error)
        if instances:
            if told:
                log.info("found %s at %s", service, instances[0].grpc_address)
            return instances[0]
        if not told:
            log.info("waiting for a %s to announce itself in NATS", service)
            told = True
        await wait_any(every_s, stop)
    return None

