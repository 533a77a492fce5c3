"""Landing writes that must not be lost on NATS: KV states and JetStream events, retried until they are stored.

`record` and `publish` note the write in runtime.pending's book (newest state
per key wins; events in order under their message ids), and `land` tries
what is due at once when NATS is connected. Whatever fails, or was noted
while NATS was away, a retry task lands with back-off, at once after a
reconnect. One lock orders every attempt, so states and events reach NATS in
the order they were recorded and a late attempt never overwrites a newer
state. Core NATS subjects are loss-tolerant and do not come here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from nats.js.kv import KeyValue

from ebbflow.runtime.bus import Bus
from ebbflow.runtime.pending import Event, PendingEvents, PendingWrites, RetrySettings, Write

log = logging.getLogger(__name__)


class Landing:
    """The writes of one owner (e.g. the actuator's registry entries and lifecycle events) to one bucket and JetStream."""

    def __init__(
        self, bus: Bus, bucket: KeyValue | None, name: str, settings: RetrySettings = RetrySettings(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bus = bus
        self.bucket = bucket
        self.name = name
        self.clock = clock
        self.writes = PendingWrites(settings)
        self.events = PendingEvents(settings)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._retrier: asyncio.Task[None] | None = None
        self.attempts_failed = 0

    @property
    def backlog(self) -> int:
        """Writes and events not yet known to be stored."""
        return len(self.writes) + len(self.events)

    def record(self, key: str, value: bytes | None) -> Write:
        """The key's new state (None: delete it), to land as soon as NATS takes it."""
        assert self.bucket is not None, f"{self.name} has no bucket"
        return self.writes.record(key, value, self.clock())

    def publish(self, subject: str, data: bytes, message_id: str) -> None:
        """An event for a JetStream stream, to land once (the stream drops a repeat of `message_id`)."""
        self.events.add(Event(subject, data, message_id))

    async def land(self) -> bool:
        """Try what is due now, when NATS is connected; start retrying what is left. True when nothing waits."""
        if self.bus.nc.is_connected:
            await self._attempt()
        if self.backlog:
            self._ensure_retrier()
        return not self.backlog

    def retry_now(self) -> None:
        """Make everything due at once (after a reconnect)."""
        self.writes.all_due(self.clock())
        self.events.all_due()
        self._wake.set()
        if self.backlog:
            self._ensure_retrier()

    async def close(self) -> None:
        """Stop retrying (what waits is lost: the owner is stopping)."""
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
        if self.backlog:
            log.warning("%s: %d write(s) never reached NATS before stopping", self.name, self.backlog)

    # ---- attempts ---------------------------------------------------------------

    async def _attempt(self) -> None:
        async with self._lock:
            for write in self.writes.due(self.clock()):
                if not await self._store(write):
                    return  # NATS is away: the rest would fail the same way, after its timeout each
            while (event := self.events.head(self.clock())) is not None:
                if not await self._send(event):
                    return

    async def _store(self, write: Write) -> bool:
        assert self.bucket is not None
        try:
            if write.value is None:
                await self.bucket.delete(write.key)
            else:
                await self.bucket.put(write.key, write.value)
        except Exception as error:
            failures = self.writes.failed(write, self.clock())
            self.attempts_failed += 1
            if failures == 1:
                log.warning("%s: writing %s failed (%s); retrying until NATS takes it", self.name, write.key, error or type(error).__name__)
            return False
        failures = self.writes.failures(write.key)
        if self.writes.landed(write) and failures:
            log.warning("%s: %s written after %d failed attempt(s)", self.name, write.key, failures)
        return True

    async def _send(self, event: Event) -> bool:
        try:
            await self.bus.js.publish(event.subject, event.data, headers={"Nats-Msg-Id": event.message_id})
        except Exception as error:
            self.attempts_failed += 1
            if self.events.failed(self.clock()) == 1:
                log.warning("%s: publishing %s failed (%s); retrying until NATS takes it", self.name, event.message_id, error or type(error).__name__)
            return False
        self.events.landed(event)
        return True

    # ---- the retry task ---------------------------------------------------------------

    def _ensure_retrier(self) -> None:
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._retry(), name=f"{self.name} retries")
            self._retrier.add_done_callback(self._report)

    def _report(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: the retry task stopped with an error", self.name, exc_info=task.exception())

    async def _retry(self) -> None:
        """Land the backlog, waiting out each back-off or a reconnect, until nothing waits or the bus closes."""
        while self.backlog and not self.bus.closing:
            reconnected = self.bus.link.reconnected
            if self.bus.nc.is_connected:
                await self._attempt()
                waits = [w for w in (self.writes.wait_s(self.clock()), self.events.wait_s(self.clock())) if w is not None]
                if not waits:
                    return
                wait_s = max(0.05, min(waits))  # at least a beat, so a failing attempt cannot spin
            else:
                wait_s = 1.0  # until the reconnect (checking now and then that the bus is not closing)
            self._wake.clear()
            waiters = [asyncio.ensure_future(reconnected.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if reconnected.is_set():
                self.writes.all_due(self.clock())
                self.events.all_due()
