"""Which scheduler leads: the lease rule, pure, time passed in (the shell is scheduler/leadership.py).

Two schedulers may run on one NATS; one decides, the other stands by with its
inputs warm. They agree through one key in the `leases` KV bucket whose value
names the holder (a per-process instance id), its term and the lease duration
it declares. Every write is a compare-and-set on the revision read (KV
`create` when there is no key, else `update(last=revision)`), so of two
schedulers acting on the same revision exactly one succeeds.

Expiry is counted by each observer on its own monotonic clock, the way
Kubernetes' client-go leader election does it (`observedTime`): a standby
takes the lease over once the key's revision has not changed for the holder's
declared `lease_s` *as seen by the standby*, counting from when it first saw
that revision. Nothing compares one machine's wall clock with another's; only
the rates of the two clocks have to agree. Why not the server's TTL (a bucket
`max_age` or a per-message TTL, which nats-server 2.11+ and nats-py's
`create(msg_ttl=)` offer)? The leader still has to stop deciding before the
server forgets its lease, and it can only tell that from its own clock; with
observer-counted expiry the one rule below covers both sides, needs no stream
option, and a stale lease left by a crash is simply overwritten (nothing has
to expire on the server first).

Safety: the leader stops deciding `renew_deadline_s` (= lease_s - renew_s)
after it *sent* its last confirmed renewal. The standby starts counting only
once it has *seen* that renewal, which is after it was sent, and waits the
whole `lease_s`; so the old leader has stopped at least `renew_s` before the
new one starts. The desired state's own compare-and-set (scheduler/publish.py)
is the fence behind that: a write from a leader that missed all this fails
its revision check.

A released lease (holder "", written by a leader that stops cleanly) is taken
at once, and so is a missing key: a lone scheduler leads from its first look.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class LeaseTiming:
    """How long a lease lasts and how often it is renewed (scheduler.lease_s, scheduler.lease_renew_s)."""

    lease_s: float = 5.0
    """A lease not renewed for this long, as an observer counts it, may be taken over, seconds."""
    renew_s: float = 1.0
    """How often the leader renews, and the longest a standby waits between looks, seconds."""

    @property
    def renew_deadline_s(self) -> float:
        """A leader that has not confirmed a renewal sent this long ago stops deciding (before anyone may take over)."""
        return self.lease_s - self.renew_s


@dataclass(frozen=True)
class LeaseRecord:
    """The lease key's value."""

    holder: str
    """Instance id of the scheduler that leads; "" once released."""
    term: int
    """Leadership term: each takeover adds one."""
    lease_s: float
    """The holder's declared lease duration: observers expire the lease by this, not by their own setting."""
    renewed_at_unix_s: float = 0.0
    """Wall time of the write, for operators only; no rule reads it."""


@dataclass(frozen=True)
class Observed:
    """One read of the lease key."""

    record: LeaseRecord | None
    """None: no key (never created, deleted, or undecodable)."""
    revision: int
    """The key's KV revision (0 with no key)."""


@dataclass(frozen=True)
class LeaseState:
    """One scheduler's view of the lease."""

    me: str
    """This scheduler's instance id."""
    leading: bool = False
    """The last write was confirmed and nothing since said otherwise."""
    term: int = 0
    """The term last held or seen."""
    revision: int = 0
    """Revision of this scheduler's last confirmed write."""
    renewed_s: float = float("-inf")
    """When that write was sent (this scheduler's clock)."""
    seen_revision: int = -1
    """The key's revision as last read (-1: never read)."""
    seen_since_s: float = 0.0
    """When this scheduler first saw `seen_revision`: expiry counts from here."""


@dataclass(frozen=True)
class LeaseAction:
    """What to write next, if anything, and when to look again."""

    kind: Literal["create", "update", "none"]
    record: LeaseRecord | None
    """The value to write (None with kind "none")."""
    last: int
    """The revision an update is conditioned on."""
    why: str
    """Said in logs: why this action."""
    wake_in_s: float
    """Look again after this long at the latest, seconds."""
    renewal: bool = False
    """The write renews a lease this scheduler holds (else it takes one, or releases it)."""


def leads(state: LeaseState, now_s: float, timing: LeaseTiming) -> bool:
    """Whether this scheduler may decide now: it holds the lease, renewed recently enough."""
    return state.leading and now_s - state.renewed_s < timing.renew_deadline_s


def step(state: LeaseState, seen: Observed, now_s: float, wall_s: float, timing: LeaseTiming) -> tuple[LeaseAction, LeaseState]:
    """What to do after reading the key: renew it, take it, or wait (and until when)."""
    if seen.revision != state.seen_revision:
        state = replace(state, seen_revision=seen.revision, seen_since_s=now_s)
    record = seen.record

    def write(term: int, why: str, renewal: bool = False) -> LeaseAction:
        value = LeaseRecord(state.me, term, timing.lease_s, wall_s)
        return LeaseAction("create" if seen.revision == 0 else "update", value, seen.revision, why, timing.renew_s, renewal)

    if record is None:
        return write(state.term + 1, "acquire: no lease held"), replace(state, leading=False)
    if record.holder == state.me:
        # Ours (a renewal that landed though its answer was lost reads as ours too): renew on what is there.
        # While the renewal is unconfirmed past the deadline, `leads` is already false; a standby that takes
        # over first makes this update fail.
        return write(record.term, "renew", renewal=True), replace(state, term=record.term)
    state = replace(state, leading=False, term=max(state.term, record.term))
    if not record.holder:
        return write(record.term + 1, f"acquire: released after term {record.term}"), state
    silent_s = now_s - state.seen_since_s
    if silent_s >= record.lease_s:
        return write(record.term + 1, f"take over: {record.holder} (term {record.term}) not renewed for {silent_s:.1f} s"), state
    wait = LeaseAction("none", None, seen.revision, f"held by {record.holder} (term {record.term})", min(timing.renew_s, record.lease_s - silent_s))
    return wait, state


def confirmed(state: LeaseState, action: LeaseAction, revision: int, sent_s: float) -> LeaseState:
    """The write went through at `revision`: this scheduler leads, renewed as of when the write was sent."""
    assert action.record is not None
    return replace(state, leading=True, term=action.record.term, revision=revision, renewed_s=sent_s, seen_revision=revision, seen_since_s=sent_s)


def refused(state: LeaseState) -> LeaseState:
    """The write's compare-and-set failed: someone else wrote first, so this scheduler does not lead, from now."""
    return replace(state, leading=False)


def release(state: LeaseState, wall_s: float, timing: LeaseTiming) -> LeaseAction | None:
    """On a clean stop: hand the lease back (holder "", same term) so a standby takes it at once; None if not held."""
    if not state.leading:
        return None
    return LeaseAction("update", LeaseRecord("", state.term, timing.lease_s, wall_s), state.revision, "release", 0.0)
