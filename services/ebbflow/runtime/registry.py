"""A live, read-only view of the replica registry (KV bucket `replicas`), policies and model configs.

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

from ebbflow.v1 import policy_pb2, registry_pb2

log = logging.getLogger(__name__)


class RegistryView:
    """Replica entries and policies by key, kept current by KV watches."""

    def __init__(self) -> None:
        self.replicas: dict[str, registry_pb2.ReplicaEntry] = {}
        self.policies: dict[str, policy_pb2.ScalingPolicy] = {}
        self.model_configs: dict[str, model_config_pb2.ModelConfig] = {}
        self.replicas_loaded = asyncio.Event()
        self.policies_loaded = asyncio.Event()
        self.model_configs_loaded = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self.replicas_loaded.is_set() and self.policies_loaded.is_set() and self.model_configs_loaded.is_set()

    async def wait_loaded(self, timeout_s: float) -> None:
        """Return once all three buckets have been read (TimeoutError after timeout_s)."""
        events = (self.replicas_loaded, self.policies_loaded, self.model_configs_loaded)
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

    def _mirror(self, target: dict[str, Any], parse: Callable[[bytes], Any], kind: str) -> tuple[Callable[[str, bytes, int], None], Callable[[str], None]]:
        """Watch callbacks that keep `target` equal to a bucket's contents."""

        def put(key: str, value: bytes, revision: int) -> None:
            try:
                target[key] = parse(value)
            except DecodeError:
                log.warning("ignoring undecodable %s %s", kind, key)
                return
            self._notify()

        def delete(key: str) -> None:
            if target.pop(key, None) is not None:
                self._notify()

        return put, delete

    async def run(self, bus: Bus, stop: asyncio.Event) -> None:
        """Watch the three buckets until stop is set."""
        on_replica = self._mirror(self.replicas, registry_pb2.ReplicaEntry.FromString, "registry entry")
        on_policy = self._mirror(self.policies, policy_pb2.ScalingPolicy.FromString, "policy")
        on_config = self._mirror(self.model_configs, model_config_pb2.ModelConfig.FromString, "model config")
        await asyncio.gather(
            watch_bucket(bus.replicas, *on_replica, self.replicas_loaded, stop, bus.link),
            watch_bucket(bus.policies, *on_policy, self.policies_loaded, stop, bus.link),
            watch_bucket(bus.models, *on_config, self.model_configs_loaded, stop, bus.link),
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
