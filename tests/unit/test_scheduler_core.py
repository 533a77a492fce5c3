"""The reactive rule, on a fake clock: no sleeps, no I/O."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebbflow.policy import ModelPolicy
from ebbflow.scheduler.core import DecisionInputs, LoadView, ScalingState, decide, recommend

# Panic off: these tests are about the reactive rule, the delay and the forecast; panic has its own test.
POLICY = ModelPolicy(model="llm", min_replicas=1, max_replicas=5, target_in_flight_per_replica=4, scale_down_delay_s=30, panic_threshold=0)


def fresh(in_flight: float) -> LoadView:
    return LoadView(fresh=True, in_flight=in_flight, arrival_rps=in_flight * 10)


@pytest.mark.parametrize("in_flight,expected", [(0, 1), (3.9, 1), (4.0, 1), (4.01, 2), (12, 3), (100, 5)])
def test_recommend_is_ceil_within_bounds(in_flight, expected):
    assert recommend(in_flight, POLICY) == expected


def test_load_below_one_replicas_target_never_scales_out():
    state, current = ScalingState(), 1
    for t in range(120):
        decision, state = decide(DecisionInputs(fresh(3.5), POLICY, state, current, float(t)))
        assert decision.valid and decision.replicas == 1


def test_scale_up_is_immediate():
    decision, _ = decide(DecisionInputs(fresh(17), POLICY, ScalingState(), 1, 0.0))
    assert decision.replicas == 5 and "scale up" in decision.reason


def test_scale_down_waits_for_the_delay_then_takes_the_window_max():
    state, current = ScalingState(), 1
    decision, state = decide(DecisionInputs(fresh(16), POLICY, state, current, 0.0))
    current = decision.replicas
    assert current == 4
    for t in range(1, 30):
        decision, state = decide(DecisionInputs(fresh(2), POLICY, state, current, float(t)))
        assert decision.replicas == 4, f"scaled down after {t} s"
    assert "waiting to scale down" in decision.reason
    decision, state = decide(DecisionInputs(fresh(2), POLICY, state, current, 30.5))
    assert decision.replicas == 1 and "scale down" in decision.reason


def test_a_short_dip_does_not_scale_down():
    state, current = ScalingState(), 3
    decision, state = decide(DecisionInputs(fresh(12), POLICY, state, current, 0.0))
    decision, state = decide(DecisionInputs(fresh(0), POLICY, state, current, 10.0))
    decision, state = decide(DecisionInputs(fresh(12), POLICY, state, current, 20.0))
    decision, state = decide(DecisionInputs(fresh(0), POLICY, state, current, 45.0))
    assert decision.replicas == 3  # the recommendation of 3 at t=20 is still inside the window


@pytest.mark.parametrize("load", [None, LoadView(fresh=False, in_flight=0.0, arrival_rps=0.0, reason="collector silent")])
def test_missing_or_stale_data_holds_never_scales_down(load):
    decision, state = decide(DecisionInputs(load, POLICY, ScalingState(), 4, 100.0))
    assert not decision.valid
    assert decision.replicas == 4
    assert decision.reason.startswith("hold")


def test_held_requests_wake_a_model_at_zero():
    policy = ModelPolicy(model="llm", min_replicas=0, max_replicas=3)
    decision, _ = decide(DecisionInputs(None, policy, ScalingState(), 0, 0.0, woken=True))
    assert decision.valid and decision.replicas == 1
    decision, _ = decide(DecisionInputs(fresh(0), policy, ScalingState(), 0, 0.0, woken=True))
    assert decision.replicas == 1 and "scale from zero" in decision.reason


def test_a_restarted_scheduler_waits_a_full_delay_before_scaling_down():
    from ebbflow.scheduler.core import DecisionInputs, resume_state

    state = resume_state(current=4, now_s=100.0)
    decision, state = decide(DecisionInputs(fresh(0), POLICY, state, 4, 110.0))
    assert decision.replicas == 4
    decision, _ = decide(DecisionInputs(fresh(0), POLICY, state, 4, 131.0))
    assert decision.replicas == 1


def test_initial_decision_is_the_floor():
    from ebbflow.scheduler.core import initial_decision

    assert initial_decision(ModelPolicy(model="llm", min_replicas=2, max_replicas=5)).replicas == 2


# ---- predictive sizing ---------------------------------------------------------------------------

from dataclasses import replace  # noqa: E402


from ebbflow.scheduler.core import ForecastView  # noqa: E402


def forecast_of(p90: list[float], issued_s: float = 0.0, step_s: float = 10.0) -> ForecastView:
    return ForecastView(issued_s, step_s, {0.5: tuple(v / 2 for v in p90), 0.9: tuple(p90), 0.99: tuple(v * 2 for v in p90)})


def with_forecast(in_flight: float, arrival_rps: float, p90: list[float], issued_s: float = 0.0) -> LoadView:
    return LoadView(fresh=True, in_flight=in_flight, arrival_rps=arrival_rps, forecast=forecast_of(p90, issued_s))


def test_a_forecast_peak_within_the_lead_scales_up_before_the_load_arrives():
    # 10 rps with 2 in flight: 0.2 s in system. The p90 forecast says 80 rps in 20 s -> 16 in flight -> 4 replicas.
    load = with_forecast(2.0, 10.0, [10, 80, 10, 10])
    decision, _ = decide(DecisionInputs(load, POLICY, ScalingState(), 1, now_s=1.0, lead_s=30.0))
    assert decision.replicas == 4 and decision.reactive == 1 and decision.prediction.replicas == 4
    assert "forecast p90 80.00 rps" in decision.reason


def test_demand_beyond_the_lead_or_a_stale_forecast_is_not_acted_on():
    beyond = with_forecast(2.0, 10.0, [10, 10, 10, 80])
    decision, _ = decide(DecisionInputs(beyond, POLICY, ScalingState(), 1, now_s=1.0, lead_s=15.0))
    assert decision.replicas == 1
    stale = with_forecast(2.0, 10.0, [80, 80, 80, 80], issued_s=-200.0)
    decision, _ = decide(DecisionInputs(stale, POLICY, ScalingState(), 1, now_s=1.0, lead_s=15.0))
    assert decision.replicas == 1 and "forecast is 201 s old" in decision.reason
    off = with_forecast(2.0, 10.0, [80, 80, 80, 80])
    decision, _ = decide(DecisionInputs(off, replace(POLICY, forecast_quantile=0.0), ScalingState(), 1, now_s=1.0, lead_s=30.0))
    assert decision.replicas == 1 and decision.prediction.note == "prediction off" and "forecast" not in decision.reason


def test_scale_down_waits_for_the_forecast_to_agree():
    state, current = ScalingState(), 4
    high = [60.0] * 4  # 60 rps x 0.2 s = 12 in flight -> 3 replicas
    for t in range(0, 60):  # the load is gone, the forecast still expects it
        decision, state = decide(DecisionInputs(with_forecast(0.4, 2.0, high, issued_s=float(t)), POLICY, state, current, float(t), lead_s=20.0))
        current = decision.replicas
    assert current == 3, "never below what the forecast needs"
    for t in range(60, 100):
        decision, state = decide(DecisionInputs(with_forecast(0.4, 2.0, [2.0] * 4, issued_s=float(t)), POLICY, state, current, float(t), lead_s=20.0))
        current = decision.replicas
    assert current == 1


@given(st.floats(0, 500), st.floats(0, 500), st.floats(0.01, 5))
def test_more_forecast_demand_never_gives_fewer_replicas(a: float, b: float, time_in_system: float):
    low, high = sorted((a, b))
    state = ScalingState(time_in_system_s=time_in_system)

    def replicas(peak: float) -> int:
        load = LoadView(fresh=True, in_flight=0.0, arrival_rps=0.0, forecast=forecast_of([peak] * 4, issued_s=0.0))
        return decide(DecisionInputs(load, POLICY, state, 1, now_s=0.0, lead_s=40.0))[0].replicas

    assert replicas(low) <= replicas(high)
    assert POLICY.min_replicas <= replicas(high) <= POLICY.max_replicas


def test_a_pin_holds_its_count_until_it_expires_then_scale_down_waits():
    pinned = replace(POLICY, pinned=True, pin_replicas=7, pin_by="alice", pin_reason="incident 42", pin_until_unix_s=1000.0)
    decision, state = decide(DecisionInputs(fresh(2.0), pinned, ScalingState(), 2, now_s=0.0, wall_s=900.0))
    assert decision.replicas == 7 and "pinned at 7 by alice: incident 42" in decision.reason  # beyond max_replicas=5: an override
    decision, state = decide(DecisionInputs(None, pinned, state, 7, now_s=10.0, wall_s=910.0))
    assert decision.valid and decision.replicas == 7  # a pin needs no load data
    decision, state = decide(DecisionInputs(fresh(2.0), pinned, state, 7, now_s=20.0, wall_s=1001.0))
    assert decision.replicas == 5 and "max_replicas 5 applied at once" in decision.reason  # expired: bounds hold again at once
    decision, state = decide(DecisionInputs(fresh(2.0), pinned, state, 5, now_s=21.0, wall_s=1002.0))
    assert decision.replicas == 5 and "waiting to scale down" in decision.reason  # within bounds, the delay still applies
    decision, state = decide(DecisionInputs(fresh(2.0), pinned, state, 5, now_s=60.0, wall_s=1041.0))
    assert decision.replicas == 1


def test_panic_engages_on_a_five_fold_step_skips_the_scale_up_window_and_blocks_scale_down():
    policy = replace(POLICY, max_replicas=20, scale_up_delay_s=30, max_scale_up_step=1, panic_threshold=2.0, panic_hold_s=60)
    state, current = ScalingState(), 2
    decision, state = decide(DecisionInputs(fresh(8.0), policy, state, current, 0.0))  # steady at 2
    assert decision.replicas == 2 and "panic" not in decision.reason
    decision, state = decide(DecisionInputs(fresh(40.0), policy, state, current, 1.0))  # x5: needs 10
    assert decision.replicas == 10 and decision.reason.startswith("panic")
    current = decision.replicas
    for t in range(2, 61):  # the burst is gone at once, but the panic holds
        decision, state = decide(DecisionInputs(fresh(4.0), policy, state, current, float(t)))
        assert decision.replicas == 10, f"scaled down {t} s into the panic"
    decision, state = decide(DecisionInputs(fresh(4.0), policy, state, current, 62.0))
    assert decision.replicas == 1 and "scale down" in decision.reason
    # The control: a x1.5 rise is not a panic, so the 30 s scale-up window and the step limit apply.
    state, current = ScalingState(), 2
    decide(DecisionInputs(fresh(8.0), policy, state, current, 0.0))
    decision, state = decide(DecisionInputs(fresh(8.0), policy, ScalingState(((0.0, 2),)), current, 1.0))
    decision, state = decide(DecisionInputs(fresh(12.0), policy, state, current, 2.0))
    assert decision.replicas == 2 and "panic" not in decision.reason


def test_the_last_replica_waits_for_the_idle_time_before_scale_to_zero():
    policy = ModelPolicy(model="llm", min_replicas=0, max_replicas=3, scale_down_delay_s=10, scale_to_zero_idle_s=60, panic_threshold=0)
    state, current = ScalingState(), 1
    for t in range(0, 120):
        idle = LoadView(fresh=True, in_flight=0.0, arrival_rps=0.0, idle_s=float(t))
        decision, state = decide(DecisionInputs(idle, policy, state, current, float(t)))
        current = decision.replicas
        if t < 60:
            assert current == 1, f"scaled to zero after {t} s idle"
            if t >= 10:
                assert "scale to zero after 60 s idle" in decision.reason
        else:
            assert current == 0, f"still {current} after {t} s idle"
            break
    # With no idle time set, the scale-down delay alone decides.
    quick = ModelPolicy(model="llm", min_replicas=0, max_replicas=3, scale_down_delay_s=10, panic_threshold=0)
    decision, _ = decide(DecisionInputs(LoadView(True, 0.0, 0.0, idle_s=11.0), quick, ScalingState(((0.0, 1),)), 1, 11.0))
    assert decision.replicas == 0


def test_a_policy_with_an_slo_but_no_curves_says_so_in_the_reason():
    policy = ModelPolicy(model="llm", max_replicas=5, slo_ttft_s=1.0, panic_threshold=0, forecast_quantile=0)
    decision, _ = decide(DecisionInputs(fresh(6), policy, ScalingState(), 1, 0.0, capacity_note="curves are being measured"))
    assert decision.replicas == 2 and "no SLO sizing: curves are being measured" in decision.reason


# Kubernetes' HPA documentation: desiredReplicas = ceil(currentReplicas * currentMetricValue / desiredMetricValue),
# no change while the ratio is within the tolerance (0.1) of 1.0. Scale-down delay and panic off, as a bare HPA.
HPA_LIKE = ModelPolicy(model="llm", min_replicas=1, max_replicas=50, target_in_flight_per_replica=4, scale_down_delay_s=0, panic_threshold=0, forecast_quantile=0)


@pytest.mark.parametrize(
    "current,ratio,expected",
    [
        (3, 200 / 100, 6),  # "200m against 100m: the number of replicas will be doubled"
        (4, 50 / 100, 2),  # "50m: you'll halve the number of replicas"
        (5, 90 / 75, 6),  # 90 % used against a 75 % target: ceil(5 x 1.2)
        (10, 90 / 75, 12),
        (10, 1.05, 10),  # within the tolerance: no change
        (10, 0.92, 10),
        (10, 1.15, 12),  # outside: ceil(11.5)
        (10, 0.85, 9),  # ceil(8.5)
    ],
)
def test_the_in_flight_rule_reproduces_the_kubernetes_hpa_examples(current, ratio, expected):
    in_flight = current * HPA_LIKE.target_in_flight_per_replica * ratio
    decision, _ = decide(DecisionInputs(LoadView(True, in_flight, in_flight), HPA_LIKE, ScalingState(), current, 0.0))
    assert decision.replicas == expected


@settings(max_examples=40, deadline=None)
@given(st.floats(0.5, 60.0), st.integers(0, 2**16))
def test_stationary_demand_with_20_percent_noise_changes_replicas_at_most_4_times_an_hour(mean, seed):
    import numpy as np

    policy = ModelPolicy(model="llm", max_replicas=100)  # the defaults, bounds wide enough for the demand
    rng = np.random.default_rng(seed)
    state, current, changes = ScalingState(), 0, -1  # the first decision (0 -> n) is not a change of mind
    for t in range(3600):
        x = mean * rng.uniform(0.8, 1.2)
        decision, state = decide(DecisionInputs(LoadView(True, x, x), policy, state, current, float(t)))
        if decision.replicas != current:
            changes += 1
            current = decision.replicas
    assert changes <= 4, f"{changes} changes in an hour at a mean in-flight of {mean:.2f}"


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 200), st.floats(0, 200), st.integers(0, 40), st.sampled_from([0.0, 0.1, 0.3]))
def test_more_demand_never_provisions_less(a, b, current, tolerance):
    from dataclasses import replace

    low, high = sorted((a, b))
    policy = replace(HPA_LIKE, scale_tolerance=tolerance)
    fewer, _ = decide(DecisionInputs(LoadView(True, low, low), policy, ScalingState(), current, 0.0))
    more, _ = decide(DecisionInputs(LoadView(True, high, high), policy, ScalingState(), current, 0.0))
    assert more.replicas >= fewer.replicas


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 5),
    st.integers(1, 12),
    st.lists(st.floats(0, 500), min_size=1, max_size=40),
    st.integers(0, 30),
    st.booleans(),
)
def test_bounds_always_hold(low, span, loads, current, woken):
    policy = ModelPolicy(model="llm", min_replicas=low, max_replicas=low + span, scale_down_delay_s=5, forecast_quantile=0)
    state = ScalingState()
    for t, x in enumerate(loads):
        decision, state = decide(DecisionInputs(LoadView(True, x, x / 2, burst_in_flight=x * 1.5), policy, state, current, float(t), woken=woken))
        assert policy.min_replicas <= decision.replicas <= policy.max_replicas, (decision.replicas, decision.reason)
        current = decision.replicas


# ---- under change: steps, untrusted or runaway forecasts, scale to zero, bounds --------------------------

# The live case: 6 closed-loop clients, 0.86 s in system (7 req/s, 6 in flight): the reactive rule needs 2.
STEP = ModelPolicy(model="llm", min_replicas=1, max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=30, panic_hold_s=20)


def step_load(
    in_flight: float, rps: float, p90: float | None = None, burst: float = -1.0, peak: float = -1.0, untrusted: str = "", issued_s: float = 0.0
) -> LoadView:
    forecast = None
    if p90 is not None:
        forecast = ForecastView(issued_s, 10.0, {0.5: (p90 * 0.8,) * 6, 0.9: (p90,) * 6, 0.99: (p90 * 1.5,) * 6}, untrusted_reason=untrusted)
    return LoadView(True, in_flight, rps, forecast=forecast, burst_in_flight=burst, recent_peak_rps=peak)


def test_a_step_up_is_met_at_once_by_the_burst_window_without_waiting_for_the_forecast():
    state, current = ScalingState(time_in_system_s=0.86), 1
    decision, state = decide(DecisionInputs(step_load(0.0, 0.0, p90=0.0, burst=0.0, peak=0.0), STEP, state, current, 0.0, lead_s=33.0))
    assert decision.replicas == 1
    # The step: the stable (30 s) window has barely moved, the 6 s burst window already holds 6 in flight, and the
    # forecast still says 0: panic meets the step at once with what it needs, 2.
    decision, state = decide(DecisionInputs(step_load(1.2, 1.4, p90=0.0, burst=6.0, peak=1.4), STEP, state, current, 1.0, lead_s=33.0))
    assert decision.replicas == 2 and decision.reason.startswith("panic: in_flight 6.00 needs 2 replicas")
    current = decision.replicas
    # Then steady, with a sane forecast (p90 8.5 req/s x 0.86 s = 7.3 in flight -> 2): never more than the need.
    for t in range(2, 300):
        decision, state = decide(DecisionInputs(step_load(6.0, 7.0, p90=8.5, burst=6.0, peak=7.0, issued_s=t - 5.0), STEP, state, current, float(t), lead_s=33.0))
        current = decision.replicas
        assert current == 2 and decision.prediction.replicas == 2, (t, decision.reason)


def test_panic_and_the_forecast_are_not_stacked_past_what_the_step_needs():
    policy = replace(STEP, max_replicas=40)
    # 40 in flight in the burst window needs 10; a forecast of 45 req/s x 0.86 s needs 10 too: 10, not 20.
    decision, _ = decide(DecisionInputs(step_load(8.0, 10.0, p90=45.0, burst=40.0, peak=12.0), policy, ScalingState(time_in_system_s=0.86), 2, 0.0, lead_s=33.0))
    assert decision.replicas == 10 and decision.reason.startswith("panic")


def test_a_runaway_forecast_is_capped_at_three_times_the_highest_rate_of_the_last_hour():
    # The issue: p90 709.54 req/s with 7 req/s seen took 6 steady clients to the maximum, 8.
    load = step_load(6.0, 7.0, p90=709.54, burst=6.0, peak=7.0)
    decision, _ = decide(DecisionInputs(load, STEP, ScalingState(time_in_system_s=0.86), 2, 0.0, lead_s=33.0))
    # 21 req/s x 0.857 s = 18 in flight -> 5; uncapped it was 8.
    assert decision.prediction.forecast_rps == pytest.approx(21.0) and decision.replicas == 5
    assert "p90 709.54 rps capped at 21.00, 3x the highest rate of the last hour" in decision.reason
    uncapped, _ = decide(DecisionInputs(replace(load, recent_peak_rps=-1.0), STEP, ScalingState(time_in_system_s=0.86), 2, 0.0, lead_s=33.0))
    assert uncapped.replicas == 8  # no history known: nothing to cap against (the simulator's case)


def test_an_untrusted_forecast_is_not_acted_on_and_the_reason_says_why():
    load = step_load(6.0, 7.0, p90=709.54, burst=6.0, peak=7.0, untrusted="p90 coverage 0.46 over the last 60 bins, 0.80 needed")
    decision, _ = decide(DecisionInputs(load, STEP, ScalingState(time_in_system_s=0.86), 2, 0.0, lead_s=33.0))
    assert decision.replicas == 2 and decision.prediction.replicas == 0
    assert "(no prediction: forecast not trusted: p90 coverage 0.46 over the last 60 bins, 0.80 needed)" in decision.reason


def test_after_a_step_down_the_fleet_returns_within_the_scale_down_delay():
    state, current = ScalingState(time_in_system_s=0.86), 2
    for t in range(0, 60):
        decision, state = decide(DecisionInputs(step_load(6.0, 7.0, p90=8.5, burst=6.0, peak=7.0, issued_s=t - 5.0), STEP, state, current, float(t), lead_s=33.0))
        current = decision.replicas
    assert current == 2
    # The load is gone at t = 60, the forecast a bin later (t = 70): one replica once the forecast has agreed for
    # the delay, and no later (no panic hold, no time-in-system memory keeps it).
    down_at = None
    for t in range(60, 140):
        p90 = 8.5 if t < 70 else 0.5
        decision, state = decide(DecisionInputs(step_load(0.0, 0.0, p90=p90, burst=0.0, peak=7.0, issued_s=t - 5.0), STEP, state, current, float(t), lead_s=33.0))
        if decision.replicas < current and down_at is None:
            down_at = t
        current = decision.replicas
    assert current == 1 and down_at == 69 + STEP.scale_down_delay_s


ZERO = ModelPolicy(model="llm", min_replicas=0, max_replicas=4, target_in_flight_per_replica=4, scale_down_delay_s=30, scale_to_zero_idle_s=60, panic_threshold=0)


def idle_for(idle_s: float, p90: float) -> LoadView:
    forecast = ForecastView(idle_s - 5.0, 10.0, {0.5: (p90 / 2,) * 6, 0.9: (p90,) * 6, 0.99: (p90 * 2,) * 6})
    return LoadView(True, 0.0, 0.0, forecast=forecast, idle_s=idle_s)


def test_the_activation_rule_takes_a_tiny_forecast_to_zero_and_keeps_a_real_one_up():
    # The issue: "forecast p90 0.00 rps over 33 s x 0.09 s in system -> 1" for 5 idle minutes.
    state, current = ScalingState(time_in_system_s=0.09), 1
    for t in range(0, 200):
        decision, state = decide(DecisionInputs(idle_for(float(t), 0.003), ZERO, state, current, float(t), lead_s=33.0))
        current = decision.replicas
        if current == 0:
            break
    assert current == 0 and t == ZERO.scale_to_zero_idle_s, t  # at the idle time, not later
    assert "below activation: forecast p50 0.00" in decision.reason and "9% chance of an arrival within 60 s" in decision.reason
    # And it stays at zero: the forecast does not bring the replica back for a sliver of demand.
    decision, _ = decide(DecisionInputs(idle_for(300.0, 0.003), ZERO, state, 0, 300.0, lead_s=33.0))
    assert decision.replicas == 0 and decision.valid
    # A median of 0.025 req/s: a 78% chance of a request within the minute: the forecast keeps the replica.
    state, current = ScalingState(time_in_system_s=0.09), 1
    for t in range(0, 200):
        decision, state = decide(DecisionInputs(idle_for(float(t), 0.05), ZERO, state, current, float(t), lead_s=33.0))
        current = decision.replicas
    assert current == 1 and "forecast p90 0.05 rps" in decision.reason
    # A stricter threshold lets it go.
    strict = replace(ZERO, activation_probability=0.99)
    decision, _ = decide(DecisionInputs(idle_for(200.0, 0.05), strict, ScalingState(((100.0, 0),), 0.09), 1, 200.0, lead_s=33.0))
    assert decision.replicas == 0


def test_activation_probability_is_validated():
    from ebbflow.runtime.errors import ConfigError

    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ConfigError, match="activation_probability must be in"):
            replace(ZERO, activation_probability=bad).validate()
    assert replace(ZERO, activation_probability=0.2).validate().activation == 0.2 and ZERO.activation == 0.5


def test_a_lowered_maximum_and_a_raised_minimum_apply_at_once():
    policy = replace(STEP, max_scale_down_step=1)
    state, current = ScalingState(), 8
    decision, state = decide(DecisionInputs(fresh(32.0), policy, state, current, 0.0))
    assert decision.replicas == 8
    lowered = replace(policy, max_replicas=3)
    decision, state = decide(DecisionInputs(fresh(32.0), lowered, state, current, 1.0))  # within the delay, the step limit and a panic hold
    assert decision.replicas == 3 and decision.reason.startswith("scale down: max_replicas 3 applied at once")
    current = 3
    decision, state = decide(DecisionInputs(fresh(32.0), lowered, state, current, 2.0))
    assert decision.replicas == 3  # and stays there, no flapping back on the old window
    raised = replace(STEP, min_replicas=5, scale_up_delay_s=60)
    decision, _ = decide(DecisionInputs(fresh(0.0), raised, ScalingState(((0.0, 1),)), 1, 1.0))
    assert decision.replicas == 5 and decision.reason.startswith("scale up: min_replicas 5 applied at once")
    in_panic = replace(STEP, panic_threshold=2.0)
    decision, state = decide(DecisionInputs(replace(fresh(4.0), burst_in_flight=20.0), in_panic, ScalingState(), 1, 0.0))
    assert decision.replicas == 5 and decision.reason.startswith("panic")
    decision, _ = decide(DecisionInputs(fresh(4.0), replace(in_panic, max_replicas=2), state, 5, 1.0))
    assert decision.replicas == 2, "a panic hold does not keep replicas above a lowered maximum"
    assert "no scale-down" not in decision.reason and "only the bound scales it down" in decision.reason


def test_each_written_decision_names_what_drove_it():
    from ebbflow.scheduler.core import DRIVERS, driver, initial_decision

    def driven(inputs: DecisionInputs) -> str:
        decision, _ = decide(inputs)
        found = driver(decision, inputs.current_replicas)
        assert found in DRIVERS
        return found

    assert driver(initial_decision(POLICY), 0) == "initial"
    assert driven(DecisionInputs(fresh(17), POLICY, ScalingState(), 1, 0.0)) == "load"
    assert driven(DecisionInputs(with_forecast(2.0, 10.0, [10, 80, 10, 10]), POLICY, ScalingState(), 1, now_s=1.0, lead_s=30.0)) == "forecast"
    pinned = replace(POLICY, pinned=True, pin_replicas=3, pin_by="alice", pin_reason="incident 42")
    assert driven(DecisionInputs(fresh(2.0), pinned, ScalingState(), 1, now_s=0.0, wall_s=1.0)) == "pin"
    raised = replace(STEP, min_replicas=5, scale_up_delay_s=60)  # the bound, not the load: applied at once
    assert driven(DecisionInputs(fresh(0.0), raised, ScalingState(((0.0, 1),)), 1, 1.0)) == "bounds"
    panicky = replace(POLICY, max_replicas=20, panic_threshold=2.0)
    assert driven(DecisionInputs(fresh(40.0), panicky, ScalingState(((0.0, 2),)), 2, 1.0)) == "panic"
    zero = ModelPolicy(model="llm", min_replicas=0, max_replicas=3, scale_down_delay_s=10, panic_threshold=0)
    assert driven(DecisionInputs(fresh(0), zero, ScalingState(), 0, 0.0, woken=True)) == "wake-up"
    assert driven(DecisionInputs(LoadView(True, 0.0, 0.0, idle_s=11.0), zero, ScalingState(((0.0, 1),)), 1, 11.0)) == "idle"
    assert driven(DecisionInputs(fresh(17), POLICY, ScalingState(), 1, 0.0, budget=(2, "llm gives way"))) == "budget"
