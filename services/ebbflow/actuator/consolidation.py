"""Consolidation: freeing a GPU by moving one ready replica to another (each move a cold start), make before break.

Which replica moves, and whether one moves at all, is actuator.core's pure
`choose_move`. This shell starts the replacement on the chosen GPU and links
the two: the old replica keeps serving until its replacement is ready, then
drains (`finish_move`); a replacement that stops first ends the move, and
the old replica counts as live again (`abandon_move`).
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable, Mapping

from ebbflow.actuator.core import MoveSnapshot, Phase, choose_move
from ebbflow.actuator.replica import ActuatorMetrics, ManagedReplica
from ebbflow.actuator.slots import GpuSlots
from ebbflow.runtime.config import PlacementConfig
from ebbflow.placement import Placed, slot_name
from ebbflow.v1 import scheduling_pb2

StartReplica = Callable[[str, scheduling_pb2.DesiredState, str, float], Awaitable[ManagedReplica | None]]
"""Starts a replica of a model on a slot with that much memory; None when it cannot."""


def finish_move(replicas: Mapping[str, ManagedReplica], replacement: ManagedReplica) -> ManagedReplica | None:
    """The replacement is ready: the replica it replaces, which now drains (make before break); None when none is left to."""
    old = replicas.get(replacement.replaces)
    replacement.replaces = ""
    if old is not None and not old.stopping:
        old.moving_to = ""
        return old
    return None


def abandon_move(replicas: Mapping[str, ManagedReplica], replica: ManagedReplica) -> None:
    """A replacement that stops before it is ready ends its move: the old replica counts as live again."""
    if replica.replaces:
        old = replicas.get(replica.replaces)
        if old is not None:
            old.moving_to = ""
        replica.replaces = ""
    if replica.moving_to:
        replacement = replicas.get(replica.moving_to)
        if replacement is not None:
            replacement.replaces = ""
        replica.moving_to = ""


class Consolidation:
    """Starts the moves `choose_move` picks, at most placement.max_moves_per_hour."""

    def __init__(
        self,
        placement: PlacementConfig,
        slots: GpuSlots,
        replicas: Mapping[str, ManagedReplica],
        desired: Mapping[str, scheduling_pb2.DesiredState],
        start: StartReplica,
        metrics: ActuatorMetrics,
        say: Callable[[str], None],
    ) -> None:
        self.max_moves_per_hour = placement.max_moves_per_hour
        self.slots = slots
        self.replicas = replicas
        self.desired = desired
        self.start = start
        self.metrics = metrics
        self.say = say
        self.recent_moves_s: tuple[float, ...] = ()
        """When recent moves started (monotonic seconds), oldest first."""

    async def consolidate(self, in_sync: bool) -> None:
        """Start one move when `choose_move` finds one: everything in sync and settled, and room in the hourly limit."""
        now = time.monotonic()
        settled = not any(r.phase != Phase.READY or r.stopping or r.moving_to or r.replaces or r.reloading for r in self.replicas.values())
        placed = tuple(Placed(replica.key, replica.entry.model, gpu, replica.entry.gpu_memory_gb) for replica, gpu in self.slots.slotted())
        choice, self.recent_moves_s = choose_move(MoveSnapshot(now, placed, in_sync, settled), self.recent_moves_s, self.slots.nodes, self.max_moves_per_hour)
        if choice.move is None:
            return
        chosen, target = choice.move
        old = self.replicas[chosen.replica_id]
        desired = self.desired.get(old.entry.model) or scheduling_pb2.DesiredState(model=old.entry.model)
        replacement = await self.start(old.entry.model, desired, slot_name(target), old.entry.gpu_memory_gb)
        if replacement is None:
            return
        old.moving_to, replacement.replaces = replacement.key, old.key
        self.recent_moves_s = (*self.recent_moves_s, now)
        self.metrics.moves.labels(old.entry.model).inc()
        moves = len(self.recent_moves_s)
        self.say(f"moving {old.key} from {old.entry.gpu_slot} to {slot_name(target)} to free a GPU ({moves} of {self.max_moves_per_hour} moves this hour)")
