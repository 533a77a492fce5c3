"""The scheduler lease rule (scheduler/lease.py) on a fake clock and a fake compare-and-set KV."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ebbflow.scheduler.lease import LeaseAction, LeaseRecord, LeaseState, LeaseTiming, Observed, confirmed, leads, refused, release, step

TIMING = LeaseTiming(lease_s=5.0, renew_s=1.0)


@dataclass
class FakeKv:
    """One key with NATS KV's compare-and-set: create only when absent, update only on the revision in force."""

    record: LeaseRecord | None = None
    revision: int = 0
    next_revision: int = 1
    writes: list[LeaseRecord] = field(default_factory=list)

    def read(self) -> Observed:
        return Observed(self.record, self.revision if self.record is not None else 0)

    def write(self, action: LeaseAction) -> int | None:
        """The new revision, or None when the compare-and-set refuses."""
        assert action.record is not None
        if action.kind == "create" and self.record is not None:
            return None
        if action.kind == "update" and action.last != self.revision:
            return None
        self.record, self.revision = action.record, self.next_revision
        self.next_revision += 1
        self.writes.append(action.record)
        return self.revision


def look(kv: FakeKv, state: LeaseState, now_s: float) -> tuple[LeaseAction, LeaseState]:
    """One turn of the shell: read, step, write, confirm or refuse."""
    action, state = step(state, kv.read(), now_s, 1000.0 + now_s, TIMING)
    if action.kind == "none":
        return action, state
    revision = kv.write(action)
    return action, (refused(state) if revision is None else confirmed(state, action, revision, now_s))


def test_a_lone_scheduler_leads_from_its_first_look():
    kv = FakeKv()
    action, state = look(kv, LeaseState("a"), 0.0)
    assert action.kind == "create" and action.record.term == 1
    assert leads(state, 0.0, TIMING)
    assert kv.record == LeaseRecord("a", 1, 5.0, 1000.0)


def test_the_leader_renews_on_the_revision_it_wrote_and_keeps_its_term():
    kv = FakeKv()
    _, state = look(kv, LeaseState("a"), 0.0)
    for t in (1.0, 2.0, 3.0):
        action, state = look(kv, state, t)
        assert action.kind == "update" and action.renewal and action.last == kv.revision - 1
        assert leads(state, t, TIMING) and state.term == 1
    assert [w.term for w in kv.writes] == [1, 1, 1, 1]


def test_a_standby_waits_the_holders_declared_lease_from_when_it_saw_the_revision():
    kv = FakeKv()
    _, a = look(kv, LeaseState("a"), 0.0)
    action, b = look(kv, LeaseState("b"), 2.0)  # b's first look: counting starts now, not at a's write
    assert action.kind == "none" and not leads(b, 2.0, TIMING) and action.wake_in_s == 1.0
    action, b = look(kv, b, 6.5)
    assert action.kind == "none" and action.wake_in_s == pytest.approx(0.5)  # wakes exactly at expiry
    action, b = look(kv, b, 7.0)
    assert action.kind == "update" and action.record.term == 2 and "not renewed for 5.0 s" in action.why
    assert leads(b, 7.0, TIMING)


def test_the_declared_lease_counts_not_the_standbys_own_setting():
    kv = FakeKv(record=LeaseRecord("a", 3, 20.0), revision=7, next_revision=8)
    _, b = look(kv, LeaseState("b"), 0.0)
    action, b = look(kv, b, 10.0)
    assert action.kind == "none"
    action, b = look(kv, b, 20.0)
    assert action.kind == "update" and action.record.term == 4


def test_each_renewal_restarts_the_standbys_count():
    kv = FakeKv()
    _, a = look(kv, LeaseState("a"), 0.0)
    _, b = look(kv, LeaseState("b"), 0.0)
    for t in range(1, 30):
        _, a = look(kv, a, float(t))
        action, b = look(kv, b, t + 0.5)
        assert action.kind == "none" and leads(a, t + 0.5, TIMING) and not leads(b, t + 0.5, TIMING)


def test_a_leader_that_cannot_renew_stops_deciding_before_anyone_may_take_over():
    kv = FakeKv()
    _, a = look(kv, LeaseState("a"), 0.0)  # a's last confirmed renewal was sent at 0
    _, b = look(kv, LeaseState("b"), 0.0)  # b saw it as early as it can: at once
    for t in (1.0, 2.0, 3.0, 3.9):
        assert leads(a, t, TIMING)  # renewals fail (NATS unreachable): state unchanged
    assert not leads(a, 4.0, TIMING)  # renew deadline = lease_s - renew_s
    action, b = look(kv, b, 4.99)
    assert action.kind == "none"  # a has stopped a whole renew interval before b may start
    action, b = look(kv, b, 5.0)
    assert action.kind == "update" and leads(b, 5.0, TIMING)


def test_a_deposed_leader_learns_it_on_its_next_look_and_stops_at_once():
    kv = FakeKv()
    _, a = look(kv, LeaseState("a"), 0.0)
    kv.record, kv.revision = LeaseRecord("b", 2, 5.0), 9  # overwritten (b took over while a was paused)
    action, a = look(kv, a, 1.0)
    assert action.kind == "none" and not leads(a, 1.0, TIMING) and a.term == 2


def test_a_refused_renewal_ends_leadership_at_once():
    kv = FakeKv()
    _, a = look(kv, LeaseState("a"), 0.0)
    action, a2 = step(a, kv.read(), 1.0, 0.0, TIMING)
    kv.record, kv.revision = LeaseRecord("b", 2, 5.0), 9  # b writes between a's read and a's write
    assert kv.write(action) is None
    assert not leads(refused(a2), 1.0, TIMING)


def test_a_renewal_that_landed_though_its_answer_was_lost_is_renewed_again():
    kv = FakeKv()
    _, a = look(kv, LeaseState("a"), 0.0)
    action, _ = step(a, kv.read(), 1.0, 0.0, TIMING)
    kv.write(action)  # landed; the shell saw a timeout and kept the old state
    action, a = look(kv, a, 2.0)
    assert action.renewal and action.last == kv.revision - 1 and leads(a, 2.0, TIMING)


def test_two_standbys_racing_for_an_expired_lease_only_one_wins():
    kv = FakeKv()
    look(kv, LeaseState("a"), 0.0)  # a dies after this
    _, b = look(kv, LeaseState("b"), 0.0)
    _, c = look(kv, LeaseState("c"), 0.0)
    take_b, b = step(b, kv.read(), 5.0, 0.0, TIMING)
    take_c, c = step(c, kv.read(), 5.0, 0.0, TIMING)
    assert take_b.kind == take_c.kind == "update" and take_b.last == take_c.last
    won_b, won_c = kv.write(take_b), kv.write(take_c)
    assert won_b is not None and won_c is None
    b, c = confirmed(b, take_b, won_b, 5.0), refused(c)
    assert leads(b, 5.0, TIMING) and not leads(c, 5.0, TIMING)


def test_a_released_lease_is_taken_at_once_with_the_next_term():
    kv = FakeKv()
    _, a = look(kv, LeaseState("a"), 0.0)
    _, b = look(kv, LeaseState("b"), 0.5)
    back = release(a, 0.0, TIMING)
    assert back is not None and back.record.holder == "" and back.last == a.revision
    assert kv.write(back) is not None
    action, b = look(kv, b, 0.6)
    assert action.kind == "update" and action.record.term == 2 and leads(b, 0.6, TIMING)


def test_release_is_nothing_for_a_standby_and_refused_once_deposed():
    kv = FakeKv()
    _, a = look(kv, LeaseState("a"), 0.0)
    assert release(LeaseState("b"), 0.0, TIMING) is None
    kv.record, kv.revision = LeaseRecord("b", 2, 5.0), 9
    back = release(a, 0.0, TIMING)  # a still thinks it leads: its release must not free b's lease
    assert back is not None and kv.write(back) is None and kv.record.holder == "b"


def test_a_lease_left_by_a_crash_is_taken_after_one_lease():
    kv = FakeKv(record=LeaseRecord("dead", 4, 5.0), revision=3, next_revision=4)
    action, s = look(kv, LeaseState("new"), 100.0)
    assert action.kind == "none" and not leads(s, 100.0, TIMING)
    action, s = look(kv, s, 105.0)
    assert action.record.term == 5 and leads(s, 105.0, TIMING)


def test_terms_never_repeat_across_many_takeovers():
    kv = FakeKv()
    states = {name: LeaseState(name) for name in "abc"}
    terms, now = [], 0.0
    for _ in range(12):
        holder = kv.record.holder if kv.record is not None else ""
        alive = [name for name in "abc" if name != holder]  # the holder dies: it looks no more
        for when in (now, now + TIMING.lease_s):
            for name in alive:
                action, states[name] = look(kv, states[name], when)
                if action.kind != "none" and not action.renewal and leads(states[name], when, TIMING):
                    terms.append(action.record.term)
        now += TIMING.lease_s + 0.1
    assert terms == list(range(1, 13))
