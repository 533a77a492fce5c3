"""What the router counts against a model's latency objectives (`ebbflow_router_slow_requests_total`, the SLI of
EbbflowLatencyBudgetBurn): answered OK after slo_latency_s, or a stream's first response after slo_ttft_s."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import CollectorRegistry

from ebbflow.router.core import ModelMeter
from ebbflow.router.telemetry import ModelBooks, RouterMetrics, misses_objective


@pytest.mark.parametrize(
    ("seconds", "first_response_s", "slo_latency_s", "slo_ttft_s", "missed"),
    [
        (0.4, -1.0, 0.5, 0.0, False),  # unary within the objective
        (0.6, -1.0, 0.5, 0.0, True),  # unary over it
        (0.5, -1.0, 0.5, 0.0, False),  # at the objective meets it
        (9.0, -1.0, 0.0, 0.5, False),  # no latency objective; a unary request has no first response
        (9.0, 0.2, 0.0, 0.5, False),  # a long stream whose first token came in time
        (9.0, 0.7, 0.0, 0.5, True),  # a late first token
        (9.0, 0.2, 5.0, 0.5, True),  # in time to first token but over the whole-request objective
        (9.0, 0.7, 0.0, 0.0, False),  # no objective at all
    ],
)
def test_misses_objective(seconds: float, first_response_s: float, slo_latency_s: float, slo_ttft_s: float, missed: bool) -> None:
    assert misses_objective(seconds, first_response_s, slo_latency_s, slo_ttft_s) is missed


def test_the_books_count_slow_answers_once_and_never_failures() -> None:
    registry = CollectorRegistry()
    books = ModelBooks(RouterMetrics(registry), "llm", ModelMeter(window_start_s=0.0), slo_latency_s=0.5, slo_ttft_s=0.1)

    def slow() -> float | None:
        return registry.get_sample_value("ebbflow_router_slow_requests_total", {"model": "llm"})

    for accepted, ended, first, code in [
        (0.0, 0.2, -1.0, grpc.StatusCode.OK),  # fast
        (1.0, 2.0, -1.0, grpc.StatusCode.OK),  # slow
        (3.0, 4.0, 0.9, grpc.StatusCode.OK),  # slow on both objectives: one miss
        (5.0, 9.0, -1.0, grpc.StatusCode.UNAVAILABLE),  # a failure is the error SLI's, not this one's
    ]:
        books.accept(accepted)
        books.answered(code, ended, accepted, first)
    assert slow() == 2.0
    assert registry.get_sample_value("ebbflow_router_requests_total", {"model": "llm", "code": "OK"}) == 3.0
