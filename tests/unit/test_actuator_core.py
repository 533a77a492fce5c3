"""Reconcile: desired count vs actual replicas."""

from ebbflow.actuator.core import ActualReplica, Phase, live_routers, reconcile, routers_idle


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


def test_a_drain_waits_for_live_routers_only_and_for_them_to_be_idle():
    seen = {"r1": 10.0, "r2": 9.5, "gone": 5.0}
    routers = live_routers(seen, now_s=11.0)
    assert routers == {"r1", "r2"}
    assert not routers_idle(routers, {"r1": True})
    assert not routers_idle(routers, {"r1": True, "r2": False})
    assert routers_idle(routers, {"r1": True, "r2": True, "gone": False})
    assert routers_idle(set(), {})
