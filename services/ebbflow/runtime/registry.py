"""A live, read-only view of the replica registry (KV bucket `replicas`), policies, model configs and tenants.

Router, collector and status watch the registry instead of asking the
actuator, so start order and restarts don't matter: a watch delivers the
current values first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Callable

from google.protobuf.message import DecodeError

from ebbflow.runtime.bus import Bus, connect, watch_bucket
from ebbflow.runtime.wire import ready
from tritonclient.grpc import model_config_pb2

from ebbflow.v1 import policy_pb2, registry_pb2, tenant_pb2

log = logging.getLogger(__name__)


class RegistryView:
    """Replica entries and policies by key, kept current by KV watches."""

    def __init__(self) -> None:
        self.replicas: dict[str, registry_pb2.ReplicaEntry] = {}
        self.policies: dict[str, policy_pb2.ScalingPolicy] = {}
        self.model_configs: dict[str, model_config_pb2.ModelConfig] = {}
        self.tenants: dict[str, tenant_pb2.Tenant] = {}
        """By name; the router finds a key's tenant through `tenant_of_key`."""
        self.tenant_of_key: dict[str, tenant_pb2.Tenant] = {}
        """By the key's SHA-256 (hex), rebuilt on every change of `tenants`."""
        self.replicas_loaded = asyncio.Event()
        self.policies_loaded = asyncio.Event()
        self.model_configs_loaded = asyncio.Event()
        self.tenants_loaded = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return all(e.is_set() for e in (self.replicas_loaded, self.policies_loaded, self.model_configs_loaded, self.tenants_loaded))

    async def wait_loaded(self, timeout_s: float) -> None:
        """Return once all four buckets have been read (TimeoutError after timeout_s)."""
        events = (self.replicas_loaded, self.policies_loaded, self.model_configs_loaded, self.tenants_loaded)
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout_s)

    def ready(self, model: str) -> list[registry_pb2.ReplicaEntry]:
        return ready(self.of_model(model))

    def of_model(self, model: str) -> list[registry_pb2.ReplicaEntry]:
        return [r for r in self.replicas.values() if r.model == model]

    def known_models(self) -> set[str]:
        return set(self.policies) | {r.model for r in self.replicas.values()}

    @property
    def changed(self) -> asyncio.Event:
        """Set by the next change: take it before reading the view, then wait on it."""
        return self._changed

    async def wait_changed(self, timeout_s: float) -> None:
        """Return after the next change, or after timeout_s."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _index_tenants(self) -> None:
        self.tenant_of_key = {t.key_sha256: t for t in self.tenants.values()}

    def _mirror(
        self, target: dict[str, Any], parse: Callable[[bytes], Any], kind: str, then: Callable[[], None] = lambda: None
    ) -> tuple[Callable[[str, bytes, int], None], Callable[[str], None]]:
        """Watch callbacks that keep `target` equal to a bucket's contents (`then` runs after each change)."""

        def put(key: str, value: bytes, revision: int) -> None:
            try:
                target[key] = parse(value)
            except DecodeError:
                log.warning("ignoring undecodable %s %s", kind, key)
                return
            then()
            self._notify()

        def delete(key: str) -> None:
            if target.pop(key, None) is not None:
                then()
                self._notify()

        return put, delete

    async def run(self, bus: Bus, stop: asyncio.Event) -> None:
        """Watch the four buckets until stop is set."""
        on_replica = self._mirror(self.replicas, registry_pb2.ReplicaEntry.FromString, "registry entry")
        on_policy = self._mirror(self.policies, policy_pb2.ScalingPolicy.FromString, "policy")
        on_config = self._mirror(self.model_configs, model_config_pb2.ModelConfig.FromString, "model config")
        on_tenant = self._mirror(self.tenants, tenant_pb2.Tenant.FromString, "tenant", self._index_tenants)
        await asyncio.gather(
            watch_bucket(bus.replicas, *on_replica, self.replicas_loaded, stop, bus.link),
            watch_bucket(bus.policies, *on_policy, self.policies_loaded, stop, bus.link),
            watch_bucket(bus.models, *on_config, self.model_configs_loaded, stop, bus.link),
            watch_bucket(bus.tenants, *on_tenant, self.tenants_loaded, stop, bus.link),
        )


@contextlib.asynccontextmanager
async def following(bus: Bus, load_timeout_s: float = 30.0) -> AsyncIterator[RegistryView]:
    """A RegistryView kept current for the life of the block, loaded on entry (TimeoutError after load_timeout_s)."""
    view, stop = RegistryView(), asyncio.Event()
    watcher = asyncio.create_task(view.run(bus, stop))
    try:
        await view.wait_loaded(load_timeout_s)
        yield view
    finally:
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)


@contextlib.asynccontextmanager
async def connected(nats_url: str, name: str, load_timeout_s: float = 30.0) -> AsyncIterator[tuple[Bus, RegistryView]]:
    """A NATS connection and a loaded RegistryView on it, both closed when the block ends."""
    bus = await connect(nats_url, name=name)
    try:
        async with following(bus, load_timeout_s) as view:
            yield bus, view
    finally:
        await bus.close()
