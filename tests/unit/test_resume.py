"""A restarted scheduler's warm-up, on a fake clock: the live restart that took a fleet of 4 to 8 and walked it back
down, replayed through the rule with and without the warm-up."""

from __future__ import annotations

from ebbflow.policy import ModelPolicy
from ebbflow.scheduler.core import DecisionInputs, ForecastView, LoadView, ScalingState, decide, resume_state
from ebbflow.scheduler.resume import WARMUP_MAX_WINDOWS, Resumed, note_snapshot, warming, while_warming

# What the live run had: 6 closed-loop clients, 2 in flight per replica, 4 replicas in force at the restart.
POLICY = ModelPolicy(model="llm", min_replicas=1, max_replicas=8, target_in_flight_per_replica=2, scale_down_delay_s=30)
WINDOW_S = 30.0
LEAD_S = 5.0


def forecast(now_s: float) -> ForecastView:
    """The refilled forecaster's, trusted at once: p90 about 200 req/s against 150 served."""
    return ForecastView(now_s, 2.0, {0.5: (150.0,) * 12, 0.9: (200.0,) * 12, 0.99: (260.0,) * 12})


def load_at(t: float, restart_s: float, ready_s: float) -> tuple[LoadView, bool]:
    """The load window's means as the restarted scheduler saw them, and whether a replica was ready. Through the
    cold start the routers hold the 6 requests and almost nothing arrives; once served, a 30 s window mixes the two
    until it has slid past the cold start."""
    served = max(0.0, min(t - ready_s, WINDOW_S)) if t >= ready_s else 0.0
    held = min(t - restart_s, WINDOW_S) - served
    arrivals = (served * 150.0 + held * 0.5) / max(1e-9, served + held)
    in_flight = 5.8 if not held else (served * 5.8 + held * 6.0) / (served + held)
    return LoadView(True, in_flight, arrivals, forecast=forecast(t), recent_peak_rps=160.0), t >= ready_s


def run(restart_s: float, ready_s: float, end_s: float, warm_up: bool) -> list[tuple[float, int, str]]:
    """Desired replicas after each one-second evaluation of a scheduler restarted at restart_s with 4 in force."""
    current, state = 4, resume_state(4, restart_s)
    resumed: Resumed | None = Resumed(restart_s) if warm_up else None
    changes = []
    t = restart_s + 1.0
    while t <= end_s:
        load, ready = load_at(t, restart_s, ready_s)
        if resumed is not None:
            resumed = note_snapshot(resumed, t, True, 4 if ready else 0)
        why = warming(resumed, current, t, WINDOW_S)
        if why:
            load, state = while_warming(load, state, current, t, why)
        decision, state = decide(DecisionInputs(load, POLICY, state, current, t, lead_s=LEAD_S))
        if decision.replicas != current:
            changes.append((t, decision.replicas, decision.reason))
            current = decision.replicas
        t += 1.0
    return changes


def test_without_the_warm_up_a_restart_under_steady_load_jumps_to_the_maximum_and_walks_back():
    changes = run(restart_s=0.0, ready_s=4.0, end_s=200.0, warm_up=False)
    assert changes and changes[0][1] == 8, changes  # the held requests' time in system x a trusted p90
    assert any(b < a for (_, a, _), (_, b, _) in zip(changes, changes[1:])), changes


def test_a_restarted_scheduler_holds_through_its_warm_up_and_then_settles_without_flapping():
    changes = run(restart_s=0.0, ready_s=4.0, end_s=200.0, warm_up=True)
    # Steady load of 5.8 in flight at 150 req/s and 0.039 s in system: reactive 3, p90 200 x 0.039 = 7.7 -> 4.
    assert changes == [], changes


def test_the_warm_up_marks_the_forecast_and_counts_the_replicas_in_force():
    resumed = Resumed(100.0)
    assert "no load with a ready replica" in warming(resumed, 4, 110.0, WINDOW_S)
    resumed = note_snapshot(resumed, 112.0, True, 0)
    assert resumed.served_since_s < 0, "a snapshot without a ready replica does not start the served window"
    resumed = note_snapshot(resumed, 114.0, True, 2)
    assert "holds 16 s of the 30 s" in warming(resumed, 4, 130.0, WINDOW_S)
    assert warming(resumed, 4, 144.0, WINDOW_S) == ""
    assert warming(Resumed(100.0), 0, 101.0, WINDOW_S) == "", "a model resumed at zero has nothing to hold"
    assert warming(Resumed(100.0), 4, 100.0 + WARMUP_MAX_WINDOWS * WINDOW_S, WINDOW_S) == "", "replicas that never come up end it too"
    assert warming(None, 4, 101.0, WINDOW_S) == ""

    load = LoadView(True, 6.0, 1.0, forecast=forecast(120.0))
    marked, state = while_warming(load, ScalingState(((100.0, 4),)), 4, 120.0, "restarted")
    assert marked is not None and marked.forecast is not None and marked.forecast.untrusted_reason == "warming up: restarted"
    assert state.recommendations[-1] == (120.0, 4)
    decision, _ = decide(DecisionInputs(marked, POLICY, state, 4, 120.0, lead_s=LEAD_S))
    assert decision.replicas == 4 and "forecast not trusted: warming up: restarted" in decision.reason


def test_a_scale_down_after_the_warm_up_still_waits_a_full_delay():
    """The load really dropped while the stack was down: the replicas in force go, but only a full scale-down
    delay after the warm-up."""
    current, state, resumed = 4, resume_state(4, 0.0), note_snapshot(Resumed(0.0), 1.0, True, 4)
    light = LoadView(True, 1.0, 20.0, recent_peak_rps=160.0)
    t, first_down = 1.0, None
    while t <= 120.0 and first_down is None:
        why = warming(resumed, current, t, WINDOW_S)
        load, state = while_warming(light, state, current, t, why) if why else (light, state)
        decision, state = decide(DecisionInputs(load, POLICY, state, current, t, lead_s=LEAD_S))
        if decision.replicas < current:
            first_down = t
        t += 1.0
    # The last warming evaluation (served since t=1, warm at t=31) counted the 4 in force; a full delay after it.
    assert first_down is not None and first_down >= WINDOW_S + POLICY.scale_down_delay_s, first_down
