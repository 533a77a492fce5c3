"""The actuator's pure decisions: reconcile, who owes a drain acknowledgement, and when to consolidate.

Level-triggered reconcile: desired count + actual replicas -> actions.
Replicas that are draining, stopped or failed don't count toward the desired
number (they are on their way out), so a died replica is replaced on the
next tick. When there are too many, starting replicas are cancelled first
(they serve nobody yet), then the newest ready ones.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping, Sequence

from ebbflow.runtime.wire import ROUTER_TELEMETRY_FRESH_S
from ebbflow.placement import GpuId, Node, Placed, consolidation_move, slot_name


class Phase(Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class ActualReplica:
    replica_id: str
    phase: Phase
    started_at_s: float


@dataclass(frozen=True)
class Actions:
    start: int
    drain: tuple[str, ...]
    reason: str

    @property
    def empty(self) -> bool:
        return self.start == 0 and not self.drain


def reconcile(desired_replicas: int, actual: Sequence[ActualReplica]) -> Actions:
    """What to do so that the live (starting + ready) replicas number desired_replicas."""
    live = [r for r in actual if r.phase in (Phase.STARTING, Phase.READY)]
    if len(live) < desired_replicas:
        missing = desired_replicas - len(live)
        return Actions(missing, (), f"{len(live)} live, {desired_replicas} desired: start {missing}")
    if len(live) > desired_replicas:
        extra = len(live) - desired_replicas
        # Starting first, then newest first: the oldest ready replicas are warm and proven.
        order = sorted(live, key=lambda r: (r.phase != Phase.STARTING, -r.started_at_s, r.replica_id))
        chosen = tuple(r.replica_id for r in order[:extra])
        return Actions(0, chosen, f"{len(live)} live, {desired_replicas} desired: drain {', '.join(chosen)}")
    return Actions(0, (), "in sync")


def live_routers(last_seen_s: Mapping[str, float], now_s: float) -> set[str]:
    """Router workers heard from within ROUTER_TELEMETRY_FRESH_S of now_s: an older one is gone and owes no drain
    acknowledgement."""
    return {router_id for router_id, seen_s in last_seen_s.items() if now_s - seen_s < ROUTER_TELEMETRY_FRESH_S}


def routers_idle(routers: Iterable[str], idle: Mapping[str, bool]) -> bool:
    """Whether every one of `routers` acknowledged the drain with nothing of its own left in flight there."""
    return all(idle.get(router_id, False) for router_id in routers)


# ---- consolidation -------------------------------------------------------------------------------

MOVE_WINDOW_S = 3600.0
"""max_moves_per_hour counts the moves started within this many seconds."""


@dataclass(frozen=True)
class MoveSnapshot:
    """What the consolidation choice looks at, taken at `now_s` (monotonic seconds)."""

    now_s: float
    placed: tuple[Placed, ...]
    """Every replica that holds a GPU slot (draining ones still hold theirs)."""
    in_sync: bool
    """Every model has its desired replicas: nothing left to start or drain."""
    settled: bool
    """Every replica is ready, and none is stopping, reloading or part of a move."""


@dataclass(frozen=True)
class MoveChoice:
    """A replica to move and the GPU it goes to, or None and why not."""

    move: tuple[Placed, GpuId] | None
    reason: str


def choose_move(
    snapshot: MoveSnapshot, recent_moves_s: tuple[float, ...], nodes: Sequence[Node], max_moves_per_hour: int
) -> tuple[MoveChoice, tuple[float, ...]]:
    """One replica to move (a cold start) to free a GPU, or none; and the moves still inside the hour.

    Only a quiet fleet moves: everything in sync and settled, no move under way, and fewer than
    max_moves_per_hour moves started in the last MOVE_WINDOW_S. `recent_moves_s` are the start times of
    earlier moves, oldest first; the caller adds `now_s` when it starts the chosen move.
    """
    if not nodes or not snapshot.in_sync or max_moves_per_hour <= 0:
        return MoveChoice(None, "no GPU inventory, not in sync, or moves switched off"), recent_moves_s
    recent = tuple(itertools.dropwhile(lambda started_s: snapshot.now_s - started_s > MOVE_WINDOW_S, recent_moves_s))
    if not snapshot.settled:
        return MoveChoice(None, "a replica is starting, stopping, reloading or moving"), recent
    if len(recent) >= max_moves_per_hour:
        return MoveChoice(None, f"{len(recent)} moves in the last hour, at most {max_moves_per_hour}"), recent
    move = consolidation_move(nodes, snapshot.placed)
    if move is None:
        return MoveChoice(None, "no GPU can be emptied onto the others"), recent
    chosen, target = move
    return MoveChoice(move, f"move {chosen.replica_id} from {slot_name(chosen.gpu)} to {slot_name(target)} to free its GPU"), recent
