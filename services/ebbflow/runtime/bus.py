"""The NATS connection every service shares: JetStream KV buckets, streams and watches."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from ebbflow.runtime import subjects
from ebbflow.runtime.errors import UnavailableError

log = logging.getLogger(__name__)


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
    closing: list[bool]

    async def close(self) -> None:
        self.closing.append(True)
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as error:  # closing anyway
                log.debug("NATS drain failed: %s", error)
                await self.nc.close()


async def _bucket(js: JetStreamContext, name: str, history: int) -> KeyValue:
    try:
        return await js.key_value(name)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(bucket=name, history=history)


async def _stream(js: JetStreamContext, name: str, subject_prefix: str, max_msgs: int) -> None:
    try:
        await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=name, subjects=[f"{subject_prefix}.>"], max_msgs=max_msgs, duplicate_window=120.0))


async def _on_error(error: Exception) -> None:
    log.debug("NATS: %s", error)


async def _on_reconnected() -> None:
    log.warning("NATS reconnected")


async def connect(url: str, name: str, connect_timeout_s: float = 5.0) -> Bus:
    """Connect and make sure every bucket and stream exists (idempotent, any service may start first)."""
    closing: list[bool] = []

    async def _on_disconnected() -> None:
        if not closing:
            log.warning("NATS disconnected; reconnecting (load data goes stale, so scaling holds)")

    try:
        nc = await nats.connect(
            url,
            name=name,
            connect_timeout=connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            error_cb=_on_error,
            disconnected_cb=_on_disconnected,
            reconnected_cb=_on_reconnected,
        )
    except Exception as error:
        raise UnavailableError(f"cannot connect to NATS at {url}: {error}; is nats-server running?") from error
    js = nc.jetstream()
    bus = Bus(
        nc=nc,
        js=js,
        replicas=await _bucket(js, subjects.REPLICAS_BUCKET, history=1),
        desired=await _bucket(js, subjects.DESIRED_BUCKET, history=16),
        policies=await _bucket(js, subjects.POLICIES_BUCKET, history=16),
        models=await _bucket(js, subjects.MODELS_BUCKET, history=1),
        capacity=await _bucket(js, subjects.CAPACITY_BUCKET, history=1),
        leases=await _bucket(js, subjects.LEASES_BUCKET, history=1),
        closing=closing,
    )
    await _stream(js, subjects.DECISIONS_STREAM, subjects.DECISIONS, max_msgs=100_000)
    await _stream(js, subjects.LIFECYCLE_STREAM, subjects.LIFECYCLE, max_msgs=100_000)
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
) -> None:
    """Deliver current values, then every change, until stop is set.

    `loaded` is set once the current values have been delivered, so callers
    can tell "empty" from "not read yet".
    """
    watcher = await kv.watchall()
    try:
        while stop is None or not stop.is_set():
            try:
                entry = await watcher.updates(timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            if entry is None:
                if loaded is not None:
                    loaded.set()
                continue
            if not isinstance(entry, KeyValue.Entry):  # stop sentinel
                return
            if entry.operation in ("DEL", "PURGE") or entry.value is None:
                result = on_delete(entry.key)
            else:
                result = on_put(entry.key, entry.value, entry.revision or 0)
            if asyncio.iscoroutine(result):
                await result
    finally:
        try:
            await watcher.stop()
        except Exception as error:
            log.debug("stopping a KV watcher failed: %s", error)
