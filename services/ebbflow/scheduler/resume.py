"""A restarted scheduler's warm-up: pure, time passed in.

A scheduler that starts while a model already has replicas in force (an
earlier scheduler decided them) has lost what it reads: its load window is
empty, and the first samples it gets span the replicas' cold start after a
restart of the whole stack, when the routers hold every request. Those
samples put the held requests in flight with next to no arrivals, so
Little's law gives a time in system ten times the real one (0.53 s against
0.05 s), and the forecaster, which refills its history from the collector,
is trusted again at once: its p90 times that time in system took a fleet
that needed 4 replicas to the maximum of 8 a second after the restart, and
the scale-down delay then walked it back down a replica at a time.

Knative starts a restarted autoscaler in panic mode for the same reason: no
scale-down until a full window of data is in. Here the model warms up until
its load window holds `window_s` of samples taken with a ready replica (at
most WARMUP_MAX_WINDOWS windows after the restart, so a model whose replicas
never come up is not held forever). While it warms up, the forecast is not
acted on (the reason says why) and the replicas in force count as a fresh
recommendation at every evaluation, so nothing scales down before a full
scale-down delay after the warm-up; the reactive rule and panic still scale
up at once for load that is really there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ebbflow.scheduler.core import ForecastView, LoadView, ScalingState

WARMUP_MAX_WINDOWS = 5.0
"""A warm-up ends at the latest this many load windows after the restart."""


@dataclass(frozen=True)
class Resumed:
    """A model this scheduler found with replicas in force."""

    at_s: float
    """When this scheduler first evaluated it."""
    served_since_s: float = -1.0
    """First fresh snapshot since then with a ready replica; < 0: none yet."""


def note_snapshot(resumed: Resumed, now_s: float, fresh: bool, ready_replicas: int) -> Resumed:
    """The resumed model after one load snapshot: served from its first fresh one with a ready replica."""
    if resumed.served_since_s < 0 and fresh and ready_replicas > 0:
        return replace(resumed, served_since_s=now_s)
    return resumed


def warming(resumed: Resumed | None, current: int, now_s: float, window_s: float) -> str:
    """Why the model is still warming up after a restart, or "" once it is warm (or was never resumed)."""
    if resumed is None or current <= 0:
        return ""  # nothing in force to protect, nor a window that spans held requests to read
    if now_s - resumed.at_s >= WARMUP_MAX_WINDOWS * window_s:
        return ""
    if resumed.served_since_s < 0:
        return f"scheduler restarted {now_s - resumed.at_s:.0f} s ago; no load with a ready replica seen yet"
    served = now_s - resumed.served_since_s
    if served >= window_s:
        return ""
    return (
        f"scheduler restarted {now_s - resumed.at_s:.0f} s ago; its load window holds {served:.0f} s of the {window_s:g} s "
        "of served load it reads (earlier samples include requests held through cold starts)"
    )


def while_warming(load: LoadView | None, state: ScalingState, current: int, now_s: float, why: str) -> tuple[LoadView | None, ScalingState]:
    """The rule's inputs during a warm-up: the forecast marked not to be acted on, the replicas in force a fresh
    recommendation (no scale-down)."""
    held = ScalingState(state.recommendations + ((now_s, current),), state.time_in_system_s, state.panic_until_s)
    if load is None:
        return None, held
    forecast = load.forecast
    untrusted = f"warming up: {why}"
    marked = (
        replace(forecast, untrusted_reason=untrusted)
        if forecast is not None
        else ForecastView(issued_s=now_s, step_s=1.0, quantiles={}, untrusted_reason=untrusted)
    )
    return replace(load, forecast=marked), held
