"""Reconcile: desired count vs actual replicas."""

from ebbflow.actuator.core import ActualReplica, Phase, reconcile


def replica(rid: str, phase: Phase, started: float = 0.0) -> ActualReplica:
    return ActualReplica(rid, phase, started)


def test_in_sync_does_nothing():
    assert reconcile(2, [replica("a", Phase.READY), replica("b", Phase.STARTING)]).empty


def test_starts_what_is_missing_and_ignores_replicas_on_their_way_out():
    actions = reconcile(3, [replica("a", Phase.READY), replica("b", Phase.DRAINING), replica("c", Phase.FAILED)])
    assert actions.start == 2 and actions.drain == ()


def test_drains_starting_first_then_newest_ready():
    actual = [replica("old", Phase.READY, 1.0), replica("new", Phase.READY, 5.0), replica("boot", Phase.STARTING, 9.0)]
    assert reconcile(1, actual).drain == ("boot", "new")


def test_zero_desired_drains_everything():
    assert set(reconcile(0, [replica("a", Phase.READY), replica("b", Phase.READY, 2.0)]).drain) == {"a", "b"}
