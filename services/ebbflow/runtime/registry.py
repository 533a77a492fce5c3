"""A live, read-only view of the replica registry (KV bucket `replicas`) and the policies bucket.

Router, collector and status watch the registry instead of asking the
actuator, so start order and restarts don't matter: a watch delivers the
current values first.
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.message import DecodeError

from ebbflow.runtime.bus import Bus, watch_bucket
from ebbflow.v1 import policy_pb2, registry_pb2

log = logging.getLogger(__name__)

READY = registry_pb2.REPLICA_STATE_READY
STARTING = registry_pb2.REPLICA_STATE_STARTING
DRAINING = registry_pb2.REPLICA_STATE_DRAINING


class RegistryView:
    """Replica entries and policies by key, kept current by KV watches."""

    def __init__(self) -> None:
        self.replicas: dict[str, registry_pb2.ReplicaEntry] = {}
        self.policies: dict[str, policy_pb2.ScalingPolicy] = {}
        self.replicas_loaded = asyncio.Event()
        self.policies_loaded = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self.replicas_loaded.is_set() and self.policies_loaded.is_set()

    def ready(self, model: str) -> list[registry_pb2.ReplicaEntry]:
        return [r for r in self.replicas.values() if r.model == model and r.state == READY]

    def of_model(self, model: str) -> list[registry_pb2.ReplicaEntry]:
        return [r for r in self.replicas.values() if r.model == model]

    def known_models(self) -> set[str]:
        return set(self.policies) | {r.model for r in self.replicas.values()}

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

    def _put_replica(self, key: str, value: bytes, revision: int) -> None:
        try:
            self.replicas[key] = registry_pb2.ReplicaEntry.FromString(value)
        except DecodeError:
            log.warning("ignoring undecodable registry entry %s", key)
            return
        self._notify()

    def _delete_replica(self, key: str) -> None:
        if self.replicas.pop(key, None) is not None:
            self._notify()

    def _put_policy(self, key: str, value: bytes, revision: int) -> None:
        try:
            self.policies[key] = policy_pb2.ScalingPolicy.FromString(value)
        except DecodeError:
            log.warning("ignoring undecodable policy %s", key)
            return
        self._notify()

    def _delete_policy(self, key: str) -> None:
        if self.policies.pop(key, None) is not None:
            self._notify()

    async def run(self, bus: Bus, stop: asyncio.Event) -> None:
        """Watch both buckets until stop is set."""
        await asyncio.gather(
            watch_bucket(bus.replicas, self._put_replica, self._delete_replica, self.replicas_loaded, stop),
            watch_bucket(bus.policies, self._put_policy, self._delete_policy, self.policies_loaded, stop),
        )
