"""Rendezvous sharding of models among collectors, and membership on a fake clock."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebbflow.collector.membership import MEMBER_LIVE_S, Membership
from ebbflow.collector.shards import Shard, Sighting, assign, live_members, owner, shard_of, sighted, weight

MODELS = [f"model-{i}" for i in range(3000)]
member_ids = st.lists(st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12), min_size=1, max_size=8, unique=True)


def near_binomial(count: int, trials: int, p: float) -> bool:
    """Within four standard deviations of a fair draw (the hash behaves as random; a skewed one fails by far more)."""
    return abs(count - trials * p) < 4 * math.sqrt(trials * p * (1 - p))


@pytest.mark.parametrize("members", [2, 3, 5, 8])
def test_models_spread_evenly_over_the_members(members: int) -> None:
    share = Counter(assign(MODELS, [f"host-{i}" for i in range(members)]).values())
    assert len(share) == members
    assert all(near_binomial(count, len(MODELS), 1 / members) for count in share.values()), share


@pytest.mark.parametrize("members", [1, 2, 4, 7])
def test_a_joining_member_takes_about_one_nth_and_only_from_the_others(members: int) -> None:
    before = [f"collector-{i}" for i in range(members)]
    after = [*before, "newcomer"]
    old, new = assign(MODELS, before), assign(MODELS, after)
    moved = [m for m in MODELS if old[m] != new[m]]
    assert all(new[m] == "newcomer" for m in moved)  # no model moves between the members that stay
    assert near_binomial(len(moved), len(MODELS), 1 / len(after)), len(moved)


@pytest.mark.parametrize("members", [2, 3, 6])
def test_a_leaving_member_gives_up_only_its_own_models(members: int) -> None:
    before = [f"collector-{i}" for i in range(members)]
    gone = before[1]
    old, new = assign(MODELS, before), assign(MODELS, [m for m in before if m != gone])
    moved = {m for m in MODELS if old[m] != new[m]}
    assert moved == {m for m in MODELS if old[m] == gone}
    assert near_binomial(len(moved), len(MODELS), 1 / members), len(moved)


@settings(max_examples=200, deadline=None)
@given(members=member_ids, model=st.text(min_size=1, max_size=30))
def test_every_view_of_the_same_members_agrees(members: list[str], model: str) -> None:
    found = owner(model, members)
    assert found in members
    assert owner(model, list(reversed(members))) == found  # order does not matter
    assert sum(shard_of(me, members).owns(model) for me in members) == 1  # exactly one owner


def test_the_hash_is_stable_across_processes() -> None:
    """Not Python's salted hash: another interpreter (another PYTHONHASHSEED) gives the same weights."""
    code = "from ebbflow.collector.shards import weight; print(weight('llm', 'host-1'), weight('llm_2', 'host-2'))"
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)}).stdout
        for seed in ("1", "2")
    }
    assert runs == {f"{weight('llm', 'host-1')} {weight('llm_2', 'host-2')}\n"}
    assert weight("llm", "host-1") == int.from_bytes(hashlib.blake2b(b"host-1\x00llm", digest_size=8).digest(), "big")


def test_no_members_no_owner_and_me_is_always_a_member() -> None:
    assert owner("llm", []) is None and assign(["llm"], []) == {}
    alone = shard_of("me", [])
    assert alone == Shard("me", ("me",)) and alone.owns("llm") and alone.owns("anything")
    assert shard_of("me", ["b", "a", "me"]).members == ("a", "b", "me")


def test_liveness_counts_from_when_a_revision_was_first_seen() -> None:
    first = sighted(None, 5, now_s=100.0)
    assert sighted(first, 5, now_s=104.0) == first  # the same revision again (a relist) does not renew
    renewed = sighted(first, 6, now_s=104.0)
    assert renewed == Sighting(6, 104.0)
    sightings = {"a": first, "b": renewed}
    assert live_members(sightings, now_s=106.0, live_s=6.0) == {"a", "b"}
    assert live_members(sightings, now_s=106.5, live_s=6.0) == {"b"}


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_membership_follows_announcements_joins_leaves_and_silence() -> None:
    clock = FakeClock()
    membership = Membership("me", clock)
    assert membership.shard().members == ("me",)  # nothing read yet: every model is mine
    membership.on_put("collector.other", b"", 1)
    membership.on_put("router.r1", b"", 2)  # other services are not members
    membership.on_put("supervisor.s1", b"", 3)
    membership.on_put("collector.me", b"", 4)
    assert membership.shard().members == ("me", "other")

    clock.now_s += MEMBER_LIVE_S - 1
    membership.on_put("collector.other", b"", 7)  # a heartbeat: a new revision
    clock.now_s += MEMBER_LIVE_S - 1
    assert membership.shard().members == ("me", "other")
    clock.now_s += 2  # silent for longer than MEMBER_LIVE_S (SIGKILLed: its key expires without a delete)
    assert membership.shard().members == ("me",)

    membership.on_put("collector.third", b"", 9)
    assert membership.shard().members == ("me", "third")
    membership.on_delete("collector.third")  # a clean stop withdraws the announcement
    assert membership.shard().members == ("me",)
