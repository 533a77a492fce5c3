"""Which collector scrapes which model: rendezvous hashing over the live collectors, pure (the shell is membership.py).

Rendezvous (highest-random-weight) hashing: for each model, every live
collector gets a weight, a stable hash of (collector, model), and the
highest weight owns the model. Each collector computes this on its own from
the members it sees; collectors that see the same members agree on every
model's owner without talking to each other, whatever other models each
happens to know. The hash is blake2b, not Python's `hash`, which is salted
per process and would give each collector its own answer.

Why rendezvous rather than a ring or a leader handing out models: a member
that joins takes only the models it now wins (about 1/n of them, each from
its old owner), and a member that leaves gives each of its models to that
model's second choice; every other model keeps its owner, and with it the
owner's warm state (replica tracks whose counters need a previous scrape,
keep-alive connections). No virtual nodes are needed for balance.

The unit is the model, because a LoadSnapshot sums all of a model's replicas
and its trailing windows run over that sum. So collectors balance by model
count, not endpoint count: with few models of many replicas the split is
lumpy (two collectors and four models are split 2/2 only three times in
eight).

Membership is counted by the observer, as the scheduler's lease is
(scheduler/lease.py): a collector is live while the revision of its
announcement in the `services` bucket changed within `live_s` as this
collector saw it, so no machine's wall clock is compared with another's.
A collector is always a member of its own view: one that sees no one (its
announcement not yet landed, NATS away) owns every model, and one that sees
others owns its share at once. Views that disagree (a join or a leave not yet
seen by everyone) therefore err towards a model published twice for a moment
rather than by no one, except when a member some see as dead is still
counted by others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping


def weight(model: str, member: str) -> int:
    """The member's stable 64-bit weight for the model (the same in every process and on every machine)."""
    digest = hashlib.blake2b(f"{member}\x00{model}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(model: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for the model; None without members. A tie of 64-bit weights
    (practically never) goes to the larger member id, so it too is the same everywhere."""
    return max(members, key=lambda member: (weight(model, member), member), default=None)


def assign(models: Iterable[str], members: Iterable[str]) -> dict[str, str]:
    """Every model's owner among the members (empty without members)."""
    everyone = tuple(members)
    if not everyone:
        return {}
    return {model: owner(model, everyone) for model in models}  # type: ignore[misc]


@dataclass(frozen=True)
class Shard:
    """One collector's view: who it is and the live collectors it shares the models with (itself included)."""

    me: str
    members: tuple[str, ...]
    """Sorted member ids, `me` among them."""

    def owns(self, model: str) -> bool:
        return owner(model, self.members) == self.me


def shard_of(me: str, seen: Iterable[str]) -> Shard:
    """This collector's shard given the other members it sees (`me` is always a member)."""
    return Shard(me, tuple(sorted(set(seen) | {me})))


@dataclass(frozen=True)
class Sighting:
    """An announcement as this collector saw it: its revision and when (its own monotonic clock) it first saw that."""

    revision: int
    since_s: float


def sighted(previous: Sighting | None, revision: int, now_s: float) -> Sighting:
    """The sighting after the announcement was seen at `revision`: a new revision restarts the count, the same
    revision seen again (a watch listing the bucket again after a reconnect) does not."""
    if previous is not None and previous.revision == revision:
        return previous
    return Sighting(revision, now_s)


def live_members(sightings: Mapping[str, Sighting], now_s: float, live_s: float) -> set[str]:
    """The members whose announcement changed within `live_s` of `now_s` as this collector saw it."""
    return {member for member, sighting in sightings.items() if now_s - sighting.since_s <= live_s}
