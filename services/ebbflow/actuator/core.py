"""Level-triggered reconcile as a pure function: desired count + actual replicas -> actions.

Replicas that are draining, stopped or failed don't count toward the desired
number (they are on their way out), so a died replica is replaced on the
next tick. When there are too many, starting replicas are cancelled first
(they serve nobody yet), then the newest ready ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping, Sequence


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


ROUTER_LIVENESS_S = 3.0
"""A router whose telemetry (one message a second) is older than this is gone and owes no drain acknowledgement."""


def live_routers(last_seen_s: Mapping[str, float], now_s: float) -> set[str]:
    """Router workers heard from within ROUTER_LIVENESS_S of now_s."""
    return {router_id for router_id, seen_s in last_seen_s.items() if now_s - seen_s < ROUTER_LIVENESS_S}


def routers_idle(routers: Iterable[str], idle: Mapping[str, bool]) -> bool:
    """Whether every one of `routers` acknowledged the drain with nothing of its own left in flight there."""
    return all(idle.get(router_id, False) for router_id in routers)
