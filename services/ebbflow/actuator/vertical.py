"""Vertical changes in place: a ready replica's instances and batch size, reloaded through Triton's repository API.

The replica keeps its process and port: its model is reloaded with an edited
config (runtime.triton.reload_with), and only what Triton then reports is
recorded, so the registry says what really runs. A reload that fails, or
would not fit the replica's GPU, is not retried until the target changes;
the replica keeps serving with its old settings meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Callable, Mapping

import aiohttp
from tritonclient.grpc import model_config_pb2

from ebbflow.actuator.core import Phase
from ebbflow.actuator.replica import ManagedReplica, RegistryWriter
from ebbflow.actuator.slots import GpuSlots
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.triton import reload_with, vertical_of, with_vertical
from ebbflow.v1 import scheduling_pb2

log = logging.getLogger(__name__)


def base_vertical(model_configs: Mapping[str, model_config_pb2.ModelConfig], model: str) -> tuple[int, int]:
    """What a replica loads from the repository: (instances, max_batch_size)."""
    config = model_configs.get(model)
    return vertical_of(config) if config is not None else (1, 0)


class VerticalReloads:
    """Brings ready replicas to their model's desired instances and batch size, one reload at a time per replica."""

    def __init__(
        self,
        model_configs: Mapping[str, model_config_pb2.ModelConfig],
        repository: Path,
        replicas: Mapping[str, ManagedReplica],
        slots: GpuSlots,
        writer: RegistryWriter,
        say: Callable[[str], None],
    ) -> None:
        self.model_configs = model_configs
        self.repository = repository
        self.replicas = replicas
        self.slots = slots
        self.writer = writer
        self.say = say
        self.session: aiohttp.ClientSession | None = None
        """Set while the actuator runs."""
        self._reloads: set[asyncio.Task[None]] = set()

    def wanted(self, model: str, desired: scheduling_pb2.DesiredState | None) -> tuple[int, int]:
        """Desired instances and batch size, 0 meaning the repository's. Batching is never switched on or off
        by a reload (max_batch_size 0 <-> > 0 changes the model's tensor shapes), only resized."""
        instances, max_batch = base_vertical(self.model_configs, model)
        if desired is None:
            return instances, max_batch
        wanted_batch = desired.vertical.max_batch_size or max_batch
        if (wanted_batch == 0) != (max_batch == 0):
            wanted_batch = max_batch
        return desired.vertical.instances_per_replica or instances, wanted_batch

    def reconcile(self, model: str, desired: scheduling_pb2.DesiredState | None) -> None:
        """Ready replicas whose instances or batch size differ from the desired state are reloaded, one at a time per replica."""
        wanted = self.wanted(model, desired)
        for replica in self.replicas.values():
            entry = replica.entry
            if entry.model != model or replica.phase != Phase.READY or replica.stopping or replica.reloading:
                continue
            if (entry.instances, entry.max_batch_size) == wanted or replica.failed_vertical == wanted:
                continue
            memory = self.slots.replica_memory(desired) if self.slots.nodes and desired is not None else entry.gpu_memory_gb
            if not self.slots.fits_in_place(replica, memory):
                replica.failed_vertical = wanted
                log.warning("vertical change of %s to %s skipped: its GPU %s lacks the memory", replica.key, wanted, entry.gpu_slot)
                continue
            task = asyncio.create_task(self._apply(replica, wanted, memory), name=f"vertical {replica.key}")
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _apply(self, replica: ManagedReplica, wanted: tuple[int, int], memory_gb: float) -> None:
        """Reload the replica's model with the wanted instances and batch size; record what Triton then reports."""
        assert self.session is not None
        entry, config = replica.entry, self.model_configs.get(replica.entry.model)
        replica.reloading = True
        try:
            if config is None:
                raise UnavailableError(f"no config.pbtxt for {entry.model} in {self.repository}")
            applied = await reload_with(self.session, entry, with_vertical(config, *wanted))
            if applied != wanted:
                raise UnavailableError(f"Triton reports {applied[0]} instances and batch {applied[1]} after the reload, not {wanted[0]} and {wanted[1]}")
            entry.instances, entry.max_batch_size = applied
            if entry.gpu_slot:
                entry.gpu_memory_gb = memory_gb
            replica.failed_vertical = None
            self.say(f"replica {replica.key} reloaded: {applied[0]} instance(s), max batch {applied[1]} (verified)")
            await self.writer.record(replica, Phase.READY, f"vertical: {applied[0]} instances, max batch {applied[1]}, verified")
        except Exception as error:  # the replica keeps serving with its old settings
            replica.failed_vertical = wanted
            log.warning("vertical change of %s to %s failed: %s", replica.key, wanted, error)
        finally:
            replica.reloading = False
