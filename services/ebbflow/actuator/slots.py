"""GPU slots on this machine: which GPU a new replica takes, and whether a resized one still fits where it is.

The inventory comes from `placement.nodes`; with none, replicas take no
slot. What each GPU holds is read off the actuator's own replicas (a
draining replica keeps its slot until it is gone), and the choice itself is
ebbflow.placement's pure `choose_slot`.
"""

from __future__ import annotations

from typing import Mapping

from ebbflow.actuator.replica import ManagedReplica
from ebbflow.runtime.config import PlacementConfig
from ebbflow.placement import GpuId, choose_slot, largest_gpu_gb, parse_node, parse_slot, slot_name
from ebbflow.v1 import scheduling_pb2


class GpuSlots:
    """The GPU inventory and what this actuator's replicas hold of it."""

    def __init__(self, placement: PlacementConfig, replicas: Mapping[str, ManagedReplica]) -> None:
        self.nodes = [parse_node(text) for text in placement.nodes]
        """The GPU inventory; empty: replicas take no slot."""
        self.gpu_budget = int(placement.gpu_budget)
        self.replicas = replicas
        self.unplaced: dict[str, str] = {}
        """Models with desired replicas that have no slot, and why."""

    def slotted(self) -> list[tuple[ManagedReplica, GpuId]]:
        """This actuator's replicas that hold a GPU slot (draining ones still hold theirs), with the slot."""
        return [(r, gpu) for r in self.replicas.values() if (gpu := parse_slot(r.entry.gpu_slot)) is not None]

    def used_gb(self, leaving_out: ManagedReplica | None = None) -> dict[GpuId, float]:
        """Memory held on each GPU by this actuator's replicas."""
        used: dict[GpuId, float] = {}
        for replica, gpu in self.slotted():
            if replica is not leaving_out:
                used[gpu] = used.get(gpu, 0.0) + replica.entry.gpu_memory_gb
        return used

    def replica_memory(self, desired: scheduling_pb2.DesiredState) -> float:
        return desired.vertical.gpu_memory_gb or largest_gpu_gb(self.nodes)

    def slot_for(self, model: str, memory_gb: float) -> tuple[str, str]:
        """A GPU slot for a new replica of `model` ("" and why when none fits)."""
        model_nodes: dict[str, int] = {}
        for replica, gpu in self.slotted():
            if replica.entry.model == model and not replica.stopping:
                model_nodes[gpu[0]] = model_nodes.get(gpu[0], 0) + 1
        gpu, why = choose_slot(self.nodes, self.used_gb(), model_nodes, memory_gb, self.gpu_budget)
        return (slot_name(gpu), "") if gpu is not None else ("", why)

    def fits_in_place(self, replica: ManagedReplica, memory_gb: float) -> bool:
        """Whether the replica's GPU still has room when its memory becomes `memory_gb` (a vertical change)."""
        gpu = parse_slot(replica.entry.gpu_slot)
        if gpu is None:
            return True
        size = next(n.gpu_memory_gb for n in self.nodes if n.name == gpu[0])
        return self.used_gb(leaving_out=replica).get(gpu, 0.0) + memory_gb <= size + 1e-9
