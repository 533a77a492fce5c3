"""Overload: when a model at its maximum replicas has more in flight than they can serve, refuse at once. Pure.

A model whose policy sets `shed_in_flight_per_replica` and that runs
`max_replicas` ready replicas cannot scale further: a request arriving while
`shed_in_flight_per_replica` x ready replicas are already in flight at this
router would only queue behind them, and past the SLO every request in the
queue is late. Refused at once instead (RESOURCE_EXHAUSTED, HTTP 429, with a
retry hint), the requests admitted keep their latency (Knative's
`containerConcurrency` hard limit and Envoy's overload manager do the same).
Below max_replicas nothing is shed: the scheduler is adding replicas and the
requests queue meanwhile.

A tenant's priority moves its limit by 25 % a level (from a quarter to twice
the limit), so under overload the lowest priority is refused first. With
several router processes (router.workers) each takes its share of the limit.
The HAProxy front applies the same limit to its fast path as each replica's
`maxconn` (router.haproxy).
"""

from __future__ import annotations

from ebbflow.v1 import policy_pb2

PRIORITY_STEP = 0.25
"""How far one level of tenant priority moves the shedding limit."""


def headroom(priority: int) -> float:
    """The share of the limit a request of this priority may fill: 1 at priority 0, 1.25 at 1, 0.75 at -1 (0.25-2)."""
    return min(2.0, max(0.25, 1.0 + PRIORITY_STEP * priority))


def shed_limit(policy: policy_pb2.ScalingPolicy | None, ready: int, workers: int = 1, priority: int = 0) -> float | None:
    """Requests in flight at this router beyond which a request of `priority` is refused; None: none is."""
    if policy is None or policy.shed_in_flight_per_replica <= 0 or ready == 0 or ready < policy.max_replicas:
        return None
    return policy.shed_in_flight_per_replica * ready * headroom(priority) / max(1, workers)


def retry_after_s(policy: policy_pb2.ScalingPolicy) -> float:
    """The retry hint: about the time in-flight requests take to leave (the latency objective; 1 s without one)."""
    return max(1.0, policy.slo_latency_s)
