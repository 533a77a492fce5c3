"""The live collectors, from their announcements in the KV bucket `services` (the rule is shards.py).

A KV watch on the bucket sees each collector's announcement (`collector.<instance_id>`)
as it is put, every HEARTBEAT_S (2 s), and deleted at a clean stop, so a
join or a clean leave is known at once. A collector whose announcement
stops changing (SIGKILLed, frozen, cut off from NATS) drops out MEMBER_LIVE_S
after its last change as this collector saw it; the bucket's TTL
(SERVICES_TTL_S, 10 s) removes the key later without telling a watch, which
is why liveness is counted here rather than taken from deletes. The collector
asks `shard()` every tick, so the ages are judged then.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from ebbflow.collector.shards import Shard, Sighting, live_members, shard_of, sighted
from ebbflow.runtime.bus import Bus, watch_bucket
from ebbflow.runtime.discovery import HEARTBEAT_S

SERVICE = "collector"
MEMBER_LIVE_S = 3 * HEARTBEAT_S
"""A collector whose announcement has not changed for this long is no longer a member, seconds: three missed
heartbeats, so a collector whose loop is busy for a tick or two keeps its models, while a dead one's move within
about 6 s rather than the bucket's 10 s TTL."""
FORGET_S = 10 * MEMBER_LIVE_S
"""A sighting this old is dropped (it stopped counting long before)."""


class Membership:
    """This collector's view of the live collectors; `shard()` is what the collector asks each tick."""

    def __init__(self, me: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.me = me
        self.clock = clock
        self.loaded = asyncio.Event()
        """Set once the bucket's current announcements have been read."""
        self._sightings: dict[str, Sighting] = {}

    def shard(self) -> Shard:
        return shard_of(self.me, live_members(self._sightings, self.clock(), MEMBER_LIVE_S))

    def _member(self, key: str) -> str | None:
        service, _, instance = key.partition(".")
        return instance if service == SERVICE and instance else None

    def on_put(self, key: str, value: bytes, revision: int) -> None:
        member = self._member(key)
        if member is None:
            return
        now = self.clock()
        # Forget the long dead (their keys expired by TTL, which a watch does not report).
        self._sightings = {m: s for m, s in self._sightings.items() if now - s.since_s <= FORGET_S}
        self._sightings[member] = sighted(self._sightings.get(member), revision, now)

    def on_delete(self, key: str) -> None:
        member = self._member(key)
        if member is not None:
            self._sightings.pop(member, None)

    async def run(self, bus: Bus, stop: asyncio.Event) -> None:
        """Follow the bucket until stop (after a reconnect the watch lists it again)."""
        await watch_bucket(bus.services, self.on_put, self.on_delete, self.loaded, stop, bus.link)
