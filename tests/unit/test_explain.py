"""A recorded decision recomputes to itself; alter one recorded input and it does not."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ebbflow.policy import ModelPolicy, policy_from_proto
from ebbflow.scheduler.core import DecisionInputs, ForecastView, LoadView, ScalingState, decide
from ebbflow.scheduler.explain import record_inputs, recompute

POLICY = ModelPolicy(model="llm", min_replicas=1, max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=30)


def recorded(in_flight: float, arrival: float, peak: float, history: list[int], current: int, woken: bool = False):  # type: ignore[no-untyped-def]
    now = 1000.0
    forecast = ForecastView(now - 4.0, 10.0, {0.5: (peak / 2,) * 6, 0.9: (peak,) * 6, 0.99: (peak * 2,) * 6})
    load = LoadView(True, in_flight, arrival, "", forecast)
    state = ScalingState(tuple((now - 5.0 * (len(history) - i), r) for i, r in enumerate(history)), 0.3)
    inputs = DecisionInputs(load, POLICY, state, current, now, woken, 35.0)
    decision, _ = decide(inputs)
    return decision, record_inputs(inputs, decision)


@settings(max_examples=60)
@given(
    st.floats(0, 40),
    st.floats(0.1, 100),
    st.floats(0, 200),
    st.lists(st.integers(1, 8), max_size=6),
    st.integers(0, 8),
    st.booleans(),
)
def test_a_recorded_decision_recomputes_to_itself(in_flight, arrival, peak, history, current, woken):
    decision, inputs = recorded(in_flight, arrival, peak, history, current, woken)
    again = recompute(inputs, policy_from_proto(inputs.policy))
    assert (again.replicas, again.reason) == (decision.replicas, decision.reason)


def test_altering_one_recorded_input_is_reported_as_a_mismatch():
    decision, inputs = recorded(in_flight=6.0, arrival=20.0, peak=90.0, history=[2, 3], current=3)
    assert decision.replicas == 7  # 90 rps x 0.3 s = 27 in flight -> 7 replicas
    altered = type(inputs)()
    altered.CopyFrom(inputs)
    altered.forecast[1].arrival_rps[:] = [30.0] * 6  # the p90 series
    again = recompute(altered, policy_from_proto(altered.policy))
    assert again.replicas != decision.replicas
    altered.CopyFrom(inputs)
    altered.policy.max_replicas = 4
    assert recompute(altered, replace(POLICY, max_replicas=4)).replicas == 4


def test_holds_untrusted_forecasts_caps_and_the_activation_rule_recompute_to_themselves():
    from ebbflow.policy import ModelPolicy as Policy

    now = 500.0
    zero = Policy(model="llm", min_replicas=0, max_replicas=4, scale_down_delay_s=30, scale_to_zero_idle_s=60, panic_threshold=0)
    tiny = ForecastView(now - 3.0, 10.0, {0.5: (0.001,) * 6, 0.9: (0.003,) * 6, 0.99: (0.01,) * 6})
    cases = [
        (None, POLICY, 3),  # no load data: a hold, recorded all the same
        (LoadView(False, 0.0, 0.0, "no load snapshot from the collector for 9 s"), POLICY, 3),
        (LoadView(True, 6.0, 7.0, "", replace(tiny, untrusted_reason="12 bins observed, 30 needed")), POLICY, 2),
        (LoadView(True, 6.0, 7.0, "", ForecastView(now - 3.0, 10.0, {0.9: (709.54,) * 6}), recent_peak_rps=7.0), POLICY, 2),
        (LoadView(True, 0.0, 0.0, "", tiny, idle_s=75.0, recent_peak_rps=0.4), zero, 1),
        # Idle with nothing in flight (a burst reading of 0, not "none"): past load no longer counts.
        (LoadView(True, 0.8, 0.1, "", tiny, burst_in_flight=0.0, idle_s=75.0), zero, 1),
    ]
    for load, policy, current in cases:
        state = ScalingState(((now - 40.0, current), (now - 10.0, 1)), 0.86)
        given = DecisionInputs(load, policy, state, current, now, False, 33.0)
        decision, _ = decide(given)
        inputs = record_inputs(given, decision)
        again = recompute(inputs, policy_from_proto(inputs.policy))
        assert (again.valid, again.replicas, again.reason) == (decision.valid, decision.replicas, decision.reason), decision.reason
    assert "forecast not trusted: 12 bins observed" in recompute(*_inputs_of(cases[2], now)).reason
    assert "capped at 21.00" in recompute(*_inputs_of(cases[3], now)).reason
    assert "below activation: forecast p50" in recompute(*_inputs_of(cases[4], now)).reason
    assert "past load no longer counts" in recompute(*_inputs_of(cases[5], now)).reason


def _inputs_of(case, now):  # type: ignore[no-untyped-def]
    load, policy, current = case
    state = ScalingState(((now - 40.0, current), (now - 10.0, 1)), 0.86)
    given = DecisionInputs(load, policy, state, current, now, False, 33.0)
    decision, _ = decide(given)
    inputs = record_inputs(given, decision)
    return inputs, policy_from_proto(inputs.policy)
