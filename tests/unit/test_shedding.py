"""The overload rule: when a model sheds, and how a tenant's priority moves its limit."""

from ebbflow.router.shedding import headroom, retry_after_s, shed_limit
from ebbflow.v1 import policy_pb2


def test_the_limit_applies_at_max_replicas_and_moves_with_priority() -> None:
    policy = policy_pb2.ScalingPolicy(model="m", max_replicas=2, shed_in_flight_per_replica=4)
    assert shed_limit(policy, ready=1) is None and shed_limit(policy, ready=0) is None
    assert shed_limit(policy, ready=2) == 8 and shed_limit(policy, ready=2, workers=2) == 4
    assert shed_limit(policy, ready=2, priority=1) == 10 and shed_limit(policy, ready=2, priority=-2) == 4
    assert shed_limit(policy_pb2.ScalingPolicy(model="m", max_replicas=1), ready=1) is None
    assert (headroom(-9), headroom(0), headroom(9)) == (0.25, 1.0, 2.0)
    assert retry_after_s(policy) == 1.0 and retry_after_s(policy_pb2.ScalingPolicy(slo_latency_s=4)) == 4.0
