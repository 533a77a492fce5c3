"""Collector core with a fake clock: rates, counter resets, staleness, router windows."""

from pathlib import Path

import pytest

from ebbflow.collector.core import (
    ReplicaTrack,
    RouterWindow,
    Scrape,
    combine_replicas,
    interval_between,
    merge_router_windows,
    rates_over,
    scrape_of,
)
from ebbflow.collector.metrics_text import parse_metrics_text

DATA = Path(__file__).parent.parent / "data"


def scrape(at: float, **counters: float) -> Scrape:
    pending = counters.pop("pending", 0.0)
    return Scrape(at, counters, {"pending_requests": pending})


def test_rates_follow_littles_law():
    before = scrape(10.0, nv_inference_request_duration_us=0, nv_inference_count=0, nv_inference_exec_count=0)
    after = scrape(12.0, nv_inference_request_duration_us=4e6, nv_inference_count=20, nv_inference_exec_count=5, pending=3)
    rates = rates_over([interval_between(before, after)])
    assert rates.in_system == pytest.approx(2.0)  # 4 request-seconds over 2 s
    assert rates.batch_efficiency == pytest.approx(4.0)
    assert rates.inference_rps == pytest.approx(10.0)
    assert rates.pending_requests == 3


def test_counter_reset_never_gives_a_negative_or_spiked_rate():
    before = scrape(0.0, nv_inference_count=1_000_000, nv_inference_exec_count=1000, nv_inference_request_duration_us=9e9)
    after = scrape(1.0, nv_inference_count=7, nv_inference_exec_count=7, nv_inference_request_duration_us=1e6)
    interval = interval_between(before, after)
    assert interval.reset
    rates = rates_over([interval])
    assert rates.inference_rps == pytest.approx(7.0)
    assert rates.in_system == pytest.approx(1.0)
    assert rates.counter_resets == 1


def test_a_reset_of_one_counter_rebases_them_all():
    # A restarted replica already past the old value on one counter: still a reset for every counter.
    before = scrape(0.0, nv_inference_count=100, nv_inference_exec_count=100)
    after = scrape(1.0, nv_inference_count=50, nv_inference_exec_count=150)
    rates = rates_over([interval_between(before, after)])
    assert rates.inference_rps == 50 and rates.batch_efficiency == pytest.approx(50 / 150)


def test_no_elapsed_time_gives_no_interval():
    assert interval_between(scrape(1.0), scrape(1.0)) is None


def test_recorded_text_becomes_a_scrape():
    text = parse_metrics_text((DATA / "triton_metrics_4models_8gpus.txt").read_bytes())
    llm = scrape_of(text, "llm", 5.0)
    assert llm.counters["nv_inference_count"] == 3
    assert llm.gauges["gpus"] == 8
    assert 0 < llm.gauges["gpu_utilization"] < 1
    assert llm.gauges["gpu_memory_total_bytes"] == 8 * 85899345920
    assert scrape_of(text, "absent", 5.0) is None


def track_with(*scrapes: Scrape) -> ReplicaTrack:
    track = ReplicaTrack(keep_s=60.0)
    for s in scrapes:
        track.observe(s, s.time_s)
    return track


def steady(at: float, rps: float = 10.0) -> Scrape:
    return scrape(at, nv_inference_count=rps * at, nv_inference_exec_count=rps * at, nv_inference_request_duration_us=0.5e6 * rps * at)


def test_a_replica_restart_on_the_same_address_gives_no_spike():
    track = track_with(steady(1), steady(2), steady(3))
    track.observe(scrape(4.0, nv_inference_count=4, nv_inference_exec_count=4, nv_inference_request_duration_us=2e6), 4.0)  # restarted
    track.observe(scrape(5.0, nv_inference_count=14, nv_inference_exec_count=14, nv_inference_request_duration_us=7e6), 5.0)
    for window in (1.0, 2.0, 10.0):
        rates = track.rates(5.0, window)
        assert 0 <= rates.inference_rps <= 10.0, window
        assert 0 <= rates.in_system <= 5.0, window


def test_a_model_missing_for_a_reload_gives_no_rate_and_no_jump():
    track = track_with(steady(1), steady(2))
    track.observe(None, 3.0)  # answered without the model: unloaded for the reload
    fresh, reason = track.status(3.0, stale_after_s=3.0)
    assert not fresh and "missing" in reason
    track.observe(steady(4.0), 4.0)  # back with counters that look continuous: only a new baseline
    assert track.rates(4.0, 1.0).inference_rps == pytest.approx(10.0)  # the last known interval, not 20 s of counts
    track.observe(steady(5.0), 5.0)
    assert track.rates(5.0, 1.0).inference_rps == pytest.approx(10.0)
    assert track.status(5.0, 3.0) == (True, "")


def test_a_failed_scrape_keeps_the_last_values_and_goes_stale():
    track = track_with(steady(1, rps=30), steady(2, rps=30))
    for at in (3.0, 4.0, 5.0, 6.0):
        track.failed("TimeoutError")
    fresh, reason = track.status(6.0, stale_after_s=3.0)
    assert not fresh and "TimeoutError" in reason and "4.0 s ago" in reason
    assert track.rates(6.0, 1.0).inference_rps == pytest.approx(30.0)  # last values, never zero


def test_a_replica_not_scraped_yet_is_stale():
    track = ReplicaTrack(keep_s=60.0)
    assert track.status(1.0, 3.0)[0] is False
    assert track.rates(1.0, 1.0) is None
    track.observe(steady(1.0), 1.0)
    assert track.status(1.0, 3.0) == (False, "waiting for a second scrape")


def test_windows_average_their_intervals():
    track = ReplicaTrack(keep_s=60.0)
    counted = 0.0
    for at in range(0, 21):
        counted += 5.0 if at <= 10 else 25.0  # 5 rps for 10 s, then 25 rps
        track.observe(scrape(float(at), nv_inference_count=counted, nv_inference_exec_count=counted), float(at))
    assert track.rates(20.0, 5.0).inference_rps == pytest.approx(25.0)
    assert track.rates(20.0, 20.0).inference_rps == pytest.approx(15.0)


def test_old_intervals_fall_out_of_the_track():
    track = ReplicaTrack(keep_s=5.0)
    for at in range(100):
        track.observe(steady(float(at)), float(at))
    assert len(track.marks) <= 8
    assert track.rates(99.0, 5.0).inference_rps == pytest.approx(10.0)


def test_combining_replicas_sums_and_weights():
    a = rates_over([interval_between(scrape(0, nv_inference_count=0, nv_inference_exec_count=0), scrape(1, nv_inference_count=40, nv_inference_exec_count=10))])
    b = rates_over([interval_between(scrape(0, nv_inference_count=0, nv_inference_exec_count=0), scrape(1, nv_inference_count=10, nv_inference_exec_count=10))])
    model = combine_replicas([a, b])
    assert model.inference_rps == 50
    assert model.batch_efficiency == pytest.approx(50 / 20)


def window(router: str, at: float, arrivals: int, in_flight: float) -> RouterWindow:
    return RouterWindow(router, at, 1.0, arrivals, in_flight, (1, 2, 0), 0.5)


def test_router_windows_add_up_across_routers():
    load = merge_router_windows("llm", [window("a", 9.5, 10, 2.0), window("b", 9.8, 5, 1.0)], now_s=10.0, stale_after_s=3.0)
    assert load.fresh
    assert load.arrival_rps == pytest.approx(15.0)
    assert load.in_flight == pytest.approx(3.0)
    assert load.latency_counts == (2, 4, 0)


def test_missing_telemetry_is_unknown_not_zero():
    load = merge_router_windows("llm", [window("a", 1.0, 10, 2.0)], now_s=10.0, stale_after_s=3.0)
    assert not load.fresh
    assert "no router telemetry" in load.reason
