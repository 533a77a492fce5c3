"""The NATS connection every service shares: JetStream KV buckets, streams and watches.

A connection reconnects forever (nats-py's reconnect loop, every
RECONNECT_WAIT_S), buffering at most PENDING_BYTES of outgoing messages
meanwhile; a publish beyond that fails at once instead of growing memory.
`NatsLink` says whether this process is connected and since when (for
`ebbflow status` and the `ebbflow_nats_connected` gauge), and signals each
reconnect, so a KV watch lists its bucket again at once (a Kubernetes
informer's relist) rather than waiting for its consumer's missed heartbeats
(about 12 s), and writers re-assert what they own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry, Gauge

from ebbflow.runtime import subjects
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.nats_auth import redact

log = logging.getLogger(__name__)

RECONNECT_WAIT_S = 0.5
"""Between reconnect attempts, seconds; attempts never stop."""
PENDING_BYTES = 2 * 1024 * 1024
"""Outgoing bytes buffered while disconnected (nats-py's default, stated here as the bound)."""
DUPLICATE_WINDOW_S = 600.0
"""How long JetStream remembers a message id of DECISIONS and LIFECYCLE: a publish retried after a NATS outage
that long or shorter is not stored twice (writers retry until NATS is back, so this bounds the outage covered)."""


@dataclass
class NatsLink:
    """This process's view of its NATS connection: up or down, since when, and a signal per reconnect."""

    url: str
    connected: bool = True
    since_unix_s: float = field(default_factory=time.time)
    """When `connected` last changed (wall clock)."""
    reconnects: int = 0
    _reconnected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def reconnected(self) -> asyncio.Event:
        """Set by the next reconnect: take it before reading, then wait on it (as RegistryView.changed)."""
        return self._reconnected

    def went_down(self) -> None:
        if self.connected:
            self.connected, self.since_unix_s = False, time.time()

    def came_back(self) -> None:
        self.connected, self.since_unix_s = True, time.time()
        self.reconnects += 1
        self._reconnected.set()
        self._reconnected = asyncio.Event()


def export_link(link: NatsLink, registry: CollectorRegistry) -> None:
    """`ebbflow_nats_connected` (1 connected, 0 not) for this process's connection."""
    gauge = Gauge("ebbflow_nats_connected", "Whether this process is connected to NATS (1) or reconnecting (0)", registry=registry)
    gauge.set_function(lambda: 1.0 if link.connected else 0.0)


@dataclass
class Bus:
    """A connected NATS client with the buckets and streams ebbflow uses."""

    nc: Client
    js: JetStreamContext
    replicas: KeyValue
    desired: KeyValue
    policies: KeyValue
    models: KeyValue
    capacity: KeyValue
    leases: KeyValue
    services: KeyValue
    tenants: KeyValue
    closing: list[bool]
    link: NatsLink
    copies: int = 1
    """How many nodes keep each bucket and stream (copies_for)."""

    async def close(self) -> None:
        self.closing.append(True)
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as error:  # closing anyway (e.g. NATS is away and the client still reconnecting)
                log.debug("NATS drain failed: %s", error)
                try:
                    await self.nc.close()
                except Exception as closing_error:
                    log.debug("closing the NATS connection failed: %s", closing_error)


def servers_of(url: str) -> list[str]:
    """The server URLs in `url`: one, or a comma-separated list (every node of a cluster)."""
    return [part.strip() for part in url.split(",") if part.strip()]


def copies_for(url: str) -> int:
    """How many nodes keep each bucket and stream: every node named, at most 3 (a JetStream quorum that survives
    losing one node; runtime/nats_server.py:NatsCluster); 1 for a single server."""
    return min(3, len(servers_of(url)))


async def _bucket(js: JetStreamContext, name: str, history: int, copies: int, ttl_s: float | None = None) -> KeyValue:
    try:
        return await js.key_value(name)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(bucket=name, history=history, ttl=ttl_s, replicas=copies)


async def _stream(js: JetStreamContext, name: str, subject_prefix: str, max_msgs: int, copies: int) -> None:
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(name=name, subjects=[f"{subject_prefix}.>"], max_msgs=max_msgs, duplicate_window=DUPLICATE_WINDOW_S, num_replicas=copies)
        )
        return
    if (info.config.duplicate_window or 0.0) < DUPLICATE_WINDOW_S:  # made by an older ebbflow with 120 s
        info.config.duplicate_window = DUPLICATE_WINDOW_S
        await js.update_stream(info.config)


async def _on_error(error: Exception) -> None:
    log.debug("NATS: %s", error)


async def connect(url: str, name: str, connect_timeout_s: float = 5.0, credentials: str = "") -> Bus:
    """Connect (with a NATS .creds file when given) and make sure every bucket and stream exists (idempotent,
    any service may start first)."""
    closing: list[bool] = []
    shown = redact(url)  # what logs and status show: no password
    link = NatsLink(shown)

    async def _on_disconnected() -> None:
        if not closing:
            link.went_down()
            log.warning("NATS at %s disconnected; reconnecting (load data goes stale, so scaling holds)", shown)

    async def _on_reconnected() -> None:
        down_s = time.time() - link.since_unix_s
        link.came_back()
        log.warning("NATS at %s reconnected after %.1f s", shown, down_s)

    try:
        nc = await nats.connect(
            servers_of(url),
            name=name,
            connect_timeout=connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            allow_reconnect=True,
            pending_size=PENDING_BYTES,
            user_credentials=credentials or None,
            error_cb=_on_error,
            disconnected_cb=_on_disconnected,
            reconnected_cb=_on_reconnected,
        )
    except Exception as error:
        raise UnavailableError(f"cannot connect to NATS at {shown}: {error}; is nats-server running?") from error
    js = nc.jetstream()
    copies = copies_for(url)
    deadline = time.monotonic() + (CLUSTER_READY_S if copies > 1 else 0.0)
    while True:
        try:
            return await _setup(nc, js, closing, link, copies)
        except Exception as error:  # a cluster just started elects its JetStream leader first
            if time.monotonic() > deadline:
                await nc.close()
                raise UnavailableError(f"JetStream at {shown} is not ready: {error}") from error
            log.info("JetStream at %s not ready yet (%s); retrying", shown, error)
            await asyncio.sleep(0.5)


CLUSTER_READY_S = 30.0
"""How long a connection to a cluster waits for JetStream to elect its leader before giving up."""


async def _setup(nc: Client, js: JetStreamContext, closing: list[bool], link: NatsLink, copies: int) -> Bus:
    bus = Bus(
        nc=nc,
        js=js,
        replicas=await _bucket(js, subjects.REPLICAS_BUCKET, 1, copies),
        desired=await _bucket(js, subjects.DESIRED_BUCKET, 16, copies),
        policies=await _bucket(js, subjects.POLICIES_BUCKET, 16, copies),
        models=await _bucket(js, subjects.MODELS_BUCKET, 1, copies),
        capacity=await _bucket(js, subjects.CAPACITY_BUCKET, 1, copies),
        leases=await _bucket(js, subjects.LEASES_BUCKET, 1, copies),
        services=await _bucket(js, subjects.SERVICES_BUCKET, 1, copies, ttl_s=subjects.SERVICES_TTL_S),
        tenants=await _bucket(js, subjects.TENANTS_BUCKET, 1, copies),
        closing=closing,
        link=link,
        copies=copies,
    )
    await _stream(js, subjects.DECISIONS_STREAM, subjects.DECISIONS, 100_000, copies)
    await _stream(js, subjects.LIFECYCLE_STREAM, subjects.LIFECYCLE, 100_000, copies)
    return bus


async def replay_subject(js: JetStreamContext, stream: str, subject: str, idle_s: float = 2.0) -> list[tuple[str, bytes]]:
    """Every stored message of a stream on `subject` (wildcards allowed), oldest first, as (subject, data)."""
    info = await js.stream_info(stream, subjects_filter=subject)
    stored = sum((info.state.subjects or {}).values()) if info.state.subjects is not None else info.state.messages
    if not stored:
        return []
    found: list[tuple[str, bytes]] = []
    subscription = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=idle_s)
            except asyncio.TimeoutError:
                break
            found.append((message.subject, message.data))
            if message.metadata.num_pending == 0:
                break
    finally:
        await subscription.unsubscribe()
    return found


async def unsubscribe(subscription: Subscription | None) -> None:
    """End a core NATS subscription; at shutdown NATS may already be gone, which is fine."""
    if subscription is None:
        return
    try:
        await subscription.unsubscribe()
    except Exception as error:
        log.debug("unsubscribing from %s failed: %s", subscription.subject, error)


OnPut = Callable[[str, bytes, int], Awaitable[None] | None]
OnDelete = Callable[[str], Awaitable[None] | None]


async def watch_bucket(
    kv: KeyValue,
    on_put: OnPut,
    on_delete: OnDelete,
    loaded: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    link: NatsLink | None = None,
) -> None:
    """Deliver current values, then every change, until stop is set.

    `loaded` is set once the current values have been delivered, so callers
    can tell "empty" from "not read yet". With `link`, each reconnect lists
    the bucket again: every current value is delivered once more (callbacks
    must be idempotent), and a key that vanished meanwhile is delivered as a
    delete.
    """
    present: set[str] = set()
    listed: set[str] | None = None  # keys seen by a relist, until its current values are in
    while stop is None or not stop.is_set():
        reconnected = link.reconnected if link is not None else None
        try:
            watcher = await kv.watchall()
        except Exception as error:  # NATS went away again before the watch was set up
            log.warning("watching KV bucket %s failed (%s); retrying", kv._name, error)
            await _pause(1.0, stop)
            continue
        try:
            while stop is None or not stop.is_set():
                if reconnected is not None and reconnected.is_set():
                    listed = set()
                    break
                try:
                    entry = await watcher.updates(timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                if entry is None:
                    if listed is not None:
                        for key in sorted(present - listed):
                            present.discard(key)
                            await _call(on_delete(key))
                        listed = None
                    if loaded is not None:
                        loaded.set()
                    continue
                if not isinstance(entry, KeyValue.Entry):  # stop sentinel
                    return
                if entry.operation in ("DEL", "PURGE") or entry.value is None:
                    present.discard(entry.key)
                    await _call(on_delete(entry.key))
                else:
                    present.add(entry.key)
                    if listed is not None:
                        listed.add(entry.key)
                    await _call(on_put(entry.key, entry.value, entry.revision or 0))
        finally:
            try:
                await watcher.stop()
            except Exception as error:
                log.debug("stopping a KV watcher failed: %s", error)


async def _call(result: Awaitable[None] | None) -> None:
    if asyncio.iscoroutine(result):
        await result


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
