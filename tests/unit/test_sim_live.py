"""The pure half of `ebbflow replay --live`: the requests sent, the simulator's band, the return to the floor."""

from __future__ import annotations

import numpy as np

from ebbflow.emulator.service_time import load_profile
from ebbflow.policy import ModelPolicy
from ebbflow.scheduler.capacity import Shape
from ebbflow.sim import live
from ebbflow.sim.workload import Requests


def test_plan_divides_arrivals_by_the_speedup_and_clips_tokens_to_what_the_model_accepts():
    requests = Requests("t", np.array([100.0, 110.0, 130.0]), np.array([0, 50, 9000]), np.array([10, 5000, 0]))
    plan = live.plan_requests(requests, speedup=10, max_prompt_words=4096, max_tokens=4096)
    assert [r.send_s for r in plan] == [0.0, 1.0, 3.0]
    assert [r.prompt_words for r in plan] == [1, 50, 4096]
    assert [r.max_tokens for r in plan] == [10, 4096, 0]
    assert len(live.prompt_text(7).split()) == 7


def test_band_is_the_simulators_min_and_max_over_the_window():
    simulated = np.array([0, 0, 1, 3, 3, 3, 1, 0, 0, 0], dtype=float)
    low, high = live.band(simulated, np.array([0.0, 3.0, 6.0, 8.0]), window_s=1.0)
    assert low.tolist() == [0, 1, 0, 0] and high.tolist() == [0, 3, 3, 0]


def test_agreement_counts_samples_outside_and_how_far():
    simulated = np.array([1, 1, 2, 2, 2, 2, 1, 1, 1, 1], dtype=float)
    times = np.arange(10, dtype=float)
    inside = live.agreement(times, simulated.astype(int), simulated, window_s=1.0)
    assert inside.inside_share == 1.0 and inside.worst_above == inside.worst_below == 0
    exploded = simulated.astype(int).copy()
    exploded[4:9] = 6  # a runaway forecast: live at the maximum while the simulator holds 1-2
    outside = live.agreement(times, exploded, simulated, window_s=1.0)
    assert outside.worst_above == 5 and outside.inside_share == 0.5 and outside.outside_times_s == (4.0, 5.0, 6.0, 7.0, 8.0)
    assert live.agreement(times, exploded, simulated, window_s=1.0, tolerance=5).inside_share == 1.0


def test_returned_at_is_when_the_fleet_reached_its_floor_for_good():
    times = np.arange(8, dtype=float)
    assert live.returned_at(times, np.array([2, 2, 0, 1, 0, 0, 0, 0]), 0, after_s=1.0) == 4.0
    assert live.returned_at(times, np.array([2, 2, 1, 1, 1, 1, 1, 1]), 0, after_s=1.0) is None


def test_simulated_side_scales_for_a_step_and_down_after_it_without_forecast():
    """The live-like controller on its own (no forecast): up for a 30 s step of 6 req/s, back to zero after."""
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.exponential(1 / 6, size=400))
    times = times[times < 30]
    plan = live.plan_requests(Requests("step", times, np.full(len(times), 200), np.full(len(times), 300)), 1.0, 4096, 4096)
    policy = ModelPolicy(
        model="llm", min_replicas=0, max_replicas=6, target_in_flight_per_replica=1, scale_down_delay_s=10, scale_to_zero_idle_s=5, panic_hold_s=10, forecast_quantile=0
    ).validate()
    settings = live.LiveSettings(time_scale=0.1, cold_start_s=3.0, shape=Shape(1, 8), policy=policy, initial_replicas=0)
    outcome, controller = live.simulate_like_live(plan, 70.0, load_profile("llama2-7b-a100"), settings)
    assert outcome.ready.max() >= 2
    assert np.isfinite(outcome.latency_s).all()
    back = live.returned_at(np.arange(len(outcome.replicas), dtype=float), outcome.replicas, 0, after_s=plan[-1].send_s)
    assert back is not None and back - plan[-1].send_s <= 5 + 10 + 3 + 2
    assert controller.changes[0][1] == 0 and "scale from zero" in controller.changes[0][3]
