"""Collector core on a metrics text recorded from the real tritonserver."""

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ebbflow.collector.core import RouterWindow, Scrape, merge_router_windows, parse_metrics, replica_rates

RECORDED = (Path(__file__).parent.parent / "data" / "triton_metrics_llm.txt").read_bytes()


def test_fast_parser_agrees_with_prometheus_client():
    fast = parse_metrics(RECORDED, "llm")
    reference: dict[str, float] = {}
    for family in text_string_to_metric_families(RECORDED.decode()):
        for sample in family.samples:
            # prometheus_client names counter samples with a _total suffix that Triton's text lacks.
            name = sample.name if sample.name in fast else sample.name.removesuffix("_total")
            if name in fast and sample.labels.get("model") == "llm":
                reference[name] = reference.get(name, 0.0) + sample.value
    assert fast, "the recorded text must hold the families we use"
    assert set(fast) == set(reference)
    for name, value in fast.items():
        assert value == pytest.approx(reference[name])


def test_other_models_are_ignored():
    assert parse_metrics(RECORDED, "other") == {}


def test_rates_follow_littles_law():
    before = Scrape(10.0, {"nv_inference_request_duration_us": 0, "nv_inference_count": 0, "nv_inference_exec_count": 0})
    after = Scrape(12.0, {"nv_inference_request_duration_us": 4e6, "nv_inference_count": 20, "nv_inference_exec_count": 5, "nv_inference_pending_request_count": 3})
    rates = replica_rates(before, after)
    assert rates.in_system == pytest.approx(2.0)  # 4 request-seconds over 2 s
    assert rates.batch_efficiency == pytest.approx(4.0)
    assert rates.inference_rps == pytest.approx(10.0)
    assert rates.pending_requests == 3


def test_counter_reset_never_gives_a_negative_or_spiked_rate():
    before = Scrape(0.0, {"nv_inference_count": 1_000_000, "nv_inference_exec_count": 1000, "nv_inference_request_duration_us": 9e9})
    after = Scrape(1.0, {"nv_inference_count": 7, "nv_inference_exec_count": 7, "nv_inference_request_duration_us": 1e6})
    rates = replica_rates(before, after)
    assert rates.inference_rps == pytest.approx(7.0)
    assert rates.in_system == pytest.approx(1.0)


def test_no_elapsed_time_gives_no_rate():
    assert replica_rates(Scrape(1.0, {}), Scrape(1.0, {})) is None


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
