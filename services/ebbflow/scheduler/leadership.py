"""The scheduler's leadership shell: reads and writes the lease key in NATS KV, the rule is scheduler/lease.py.

One loop per scheduler looks at the `leases` bucket's `scheduler` key every
`lease_renew_s` (at once when a watch says another scheduler changed it),
hands what it read to `lease.step`, and writes what the rule says with
compare-and-set. `leads()` is what the scheduler asks before each decision;
it reads the monotonic clock, so a leader whose renewals stop landing (NATS
unreachable, the process paused) stops deciding on time even while a NATS
call hangs.

A clean stop releases the lease (holder "") so a standby takes it at once; a
cancelled task (or a killed process) does not, and the standby waits a lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Callable

import nats
from google.protobuf.message import DecodeError
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Gauge

from ebbflow.runtime import subjects
from ebbflow.runtime.loops import wait_any
from ebbflow.scheduler.lease import LeaseAction, LeaseRecord, LeaseState, LeaseTiming, Observed, confirmed, leads, refused, release, step
from ebbflow.v1 import scheduling_pb2

log = logging.getLogger(__name__)


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "?"


def new_instance_id() -> str:
    """host/pid-namespace/pid/random: unique per Scheduler object, and tells a holder that died on this host (below)."""
    return f"{socket.gethostname()}/{_pid_namespace()}/{os.getpid()}/{secrets.token_hex(3)}"


def holder_gone(holder: str) -> bool:
    """The holder ran on this host, in this pid namespace, and its process is no longer there.

    After a crash of `ebbflow up` the restarted scheduler would otherwise wait a whole lease for its own dead
    predecessor; only a process this host can see is judged, and a pid reused since only makes it wait.
    """
    parts = holder.split("/")
    if len(parts) != 4 or parts[0] != socket.gethostname() or parts[1] != _pid_namespace() or parts[1] == "?":
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # another scheduler of this process (tests): alive as far as the OS can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _record(value: bytes | None) -> LeaseRecord:
    """The stored lease; an undecodable one reads as released (it is overwritten on its revision)."""
    try:
        lease = scheduling_pb2.SchedulerLease.FromString(value or b"")
    except DecodeError:
        return LeaseRecord("", 0, 0.0)
    return LeaseRecord(lease.holder, lease.term, lease.lease_s, lease.renewed_at_unix_s)


def _encoded(record: LeaseRecord) -> bytes:
    return scheduling_pb2.SchedulerLease(
        holder=record.holder, term=record.term, lease_s=record.lease_s, renewed_at_unix_s=record.renewed_at_unix_s
    ).SerializeToString()


class Leadership:
    """Holds or waits for the scheduler lease; `leads()` says whether this scheduler may decide now."""

    def __init__(
        self,
        kv: KeyValue,
        timing: LeaseTiming,
        gauge: Gauge | None = None,
        on_change: Callable[[bool], None] | None = None,
        instance_id: str = "",
    ) -> None:
        self.kv = kv
        self.timing = timing
        self.state = LeaseState(instance_id or new_instance_id())
        self.holder = ""
        """The holder as last read ("" when none)."""
        self._gauge = gauge
        self._on_change = on_change
        self._was_leading = False
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def instance_id(self) -> str:
        return self.state.me

    def leads(self) -> bool:
        """This scheduler holds the lease and renewed it within the renew deadline; also notices a loss."""
        leading = leads(self.state, time.monotonic(), self.timing)
        if leading != self._was_leading:
            self._changed(leading)
        return leading

    def _changed(self, leading: bool) -> None:
        self._was_leading = leading
        if self._gauge is not None:
            self._gauge.set(1 if leading else 0)
        if leading:
            log.info("scheduler %s leads (term %d): deciding", self.state.me, self.state.term)
        elif self._stopping:
            log.info("scheduler %s stops leading (term %d): stopping", self.state.me, self.state.term)
        else:
            log.warning("scheduler %s no longer leads (term %d; holder now %s): standing by", self.state.me, self.state.term, self.holder or "none")
        if self._on_change is not None:
            self._on_change(leading)

    async def _read(self) -> Observed:
        try:
            entry = await self.kv.get(subjects.SCHEDULER_LEASE)
        except KeyNotFoundError:
            return Observed(None, 0)
        record = _record(entry.value)
        if record.holder and record.holder != self.state.me and holder_gone(record.holder):
            log.info("lease holder %s ran on this host and is gone: taking its lease without waiting", record.holder)
            record = LeaseRecord("", record.term, record.lease_s, record.renewed_at_unix_s)
        return Observed(record, entry.revision or 0)

    async def _write(self, action: LeaseAction) -> None:
        """Carry out a write; confirm or refuse it; an unknown outcome (NATS error) changes nothing."""
        assert action.record is not None
        sent = time.monotonic()
        try:
            if action.kind == "create":
                revision = await self.kv.create(subjects.SCHEDULER_LEASE, _encoded(action.record))
            else:
                revision = await self.kv.update(subjects.SCHEDULER_LEASE, _encoded(action.record), last=action.last)
        except KeyWrongLastSequenceError:
            self.state = refused(self.state)
            log.info("lease write (%s) refused: another scheduler wrote first", action.why)
            return
        except APIError as error:  # "key exists" on a create that raced another
            self.state = refused(self.state)
            log.info("lease write (%s) refused: %s", action.why, error)
            return
        self.state = confirmed(self.state, action, revision, sent)
        self.holder = self.state.me
        if not action.renewal:
            log.info("scheduler lease acquired (%s): term %d", action.why, self.state.term)

    async def look(self) -> float:
        """One turn: read the key, renew, take or wait; the seconds until the next look."""
        try:
            seen = await self._read()
            action, self.state = step(self.state, seen, time.monotonic(), time.time(), self.timing)
            self.holder = seen.record.holder if seen.record is not None else ""
            if action.kind != "none":
                await self._write(action)
            wake_in = action.wake_in_s
        except Exception as error:  # NATS unreachable: the renew deadline ends leading on its own
            log.warning("scheduler lease: %s; retrying in %.1f s", error or type(error).__name__, self.timing.renew_s)
            wake_in = self.timing.renew_s
        self.leads()
        return wake_in

    async def _watch(self, stop: asyncio.Event) -> None:
        """Wake the loop when another scheduler changes the key (a release is taken at once, not at the next look)."""
        watcher = await self.kv.watch(subjects.SCHEDULER_LEASE, include_history=False)
        try:
            while not stop.is_set():
                try:
                    entry = await watcher.updates(timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                if entry is None or not isinstance(entry, KeyValue.Entry):
                    continue
                if entry.value is None or _record(entry.value).holder != self.state.me:
                    self._wake.set()
        finally:
            try:
                await watcher.stop()
            except Exception as error:
                log.debug("stopping the lease watcher failed: %s", error)

    async def run(self, stop: asyncio.Event) -> None:
        """Look every renew interval (or when woken) until stop; then release the lease if held.

        Only a clean stop releases: a cancelled task stops renewing and leaves the lease to expire, as a dead
        process would.
        """
        watch = asyncio.create_task(self._watch(stop))
        wake_in = self.timing.renew_s if self.state.seen_revision >= 0 else 0.0  # the caller may have looked already
        try:
            while not stop.is_set():
                await wait_any(wake_in, stop, self._wake)
                if stop.is_set():
                    break
                self._wake.clear()
                wake_in = await self.look()
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        await self.release()

    async def release(self) -> None:
        """Hand the lease back (compare-and-set on our own revision: a lease someone took over is left alone)."""
        action = release(self.state, time.time(), self.timing)
        self._stopping = True
        self.state = refused(self.state)
        self.leads()
        if action is None or action.record is None:
            return
        try:
            await self.kv.update(subjects.SCHEDULER_LEASE, _encoded(action.record), last=action.last)
            log.info("scheduler lease released (term %d)", action.record.term)
        except Exception as error:  # taken over meanwhile, or NATS gone: it expires on its own
            log.info("releasing the scheduler lease failed (%s); it expires after %.1f s", error or type(error).__name__, self.timing.lease_s)
