"""The reactive scaling rule, as a pure function of a snapshot.

desired = ceil(in_flight / target_in_flight_per_replica), clamped to the
policy's bounds. Scale-up is immediate; scale-down takes the maximum
recommendation over the last `scale_down_delay_s` (Knative's scale-down
delay), so a short lull does not throw away replicas that take tens of
seconds to come back. Missing or stale load means "hold": an invalid
decision with a reason, never a scale-down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ebbflow.runtime.config import ModelPolicy

# in_flight is a time average: tiny float error must not add a replica.
_EPSILON = 1e-9


@dataclass(frozen=True)
class LoadView:
    """What the rule needs to know about one model's load."""

    fresh: bool
    in_flight: float
    arrival_rps: float
    reason: str = ""


@dataclass(frozen=True)
class ScalingState:
    """Recommendations inside the scale-down window: (time_s, replicas), oldest first."""

    recommendations: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class Decision:
    valid: bool
    replicas: int
    reason: str
    recommendation: int = 0
    window: tuple[int, ...] = ()


def recommend(in_flight: float, policy: ModelPolicy) -> int:
    """Replicas needed right now for this in-flight load, within bounds."""
    raw = math.ceil(max(0.0, in_flight) / policy.target_in_flight_per_replica - _EPSILON)
    return min(policy.max_replicas, max(policy.min_replicas, raw))


def initial_decision(policy: ModelPolicy) -> Decision:
    """The first desired state of a model nobody has decided for yet: its floor."""
    return Decision(True, policy.min_replicas, f"initial: {policy.min_replicas} replica(s) from min_replicas", policy.min_replicas)


def resume_state(current: int, now_s: float) -> ScalingState:
    """State for a scheduler that starts (or restarts) with `current` replicas in force.

    Counting the replicas in force as a fresh recommendation means a restart
    never scales down before a full scale-down delay has passed.
    """
    return ScalingState(((now_s, current),))


def decide(load: LoadView | None, policy: ModelPolicy, state: ScalingState, current: int, now_s: float, woken: bool = False) -> tuple[Decision, ScalingState]:
    """Desired replicas for one model. `current` is the desired count in force; `woken` means requests are held."""
    if load is None or not load.fresh:
        why = load.reason if load is not None and load.reason else "no load data yet"
        floor = max(current, policy.min_replicas, 1 if woken else 0)
        floor = min(floor, policy.max_replicas)
        if floor != current:
            # Bounds and wake-ups still apply while holding: they never need load data.
            return Decision(True, floor, f"hold at bounds: {why}"), state
        return Decision(False, current, f"hold: {why}"), state
    recommendation = recommend(load.in_flight, policy)
    if woken:
        recommendation = max(recommendation, min(1, policy.max_replicas))
    horizon = now_s - policy.scale_down_delay_s
    window = tuple((t, r) for t, r in state.recommendations if t > horizon) + ((now_s, recommendation),)
    desired = max(r for _, r in window)
    if desired > current:
        reason = f"scale up: in_flight {load.in_flight:.2f} / target {policy.target_in_flight_per_replica:g} per replica -> {recommendation}"
    elif desired < current:
        reason = f"scale down: max recommendation over the last {policy.scale_down_delay_s:g} s is {desired} (in_flight {load.in_flight:.2f})"
    elif recommendation < current:
        reason = f"waiting to scale down: {recommendation} recommended, {current} held for the {policy.scale_down_delay_s:g} s delay"
    else:
        reason = f"steady: in_flight {load.in_flight:.2f} needs {recommendation}"
    if woken and desired >= 1 and current == 0:
        reason = f"scale from zero: requests are held; {reason}"
    return Decision(True, desired, reason, recommendation, tuple(r for _, r in window)), ScalingState(window)
