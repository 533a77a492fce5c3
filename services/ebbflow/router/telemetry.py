"""What the router measures: its Prometheus metrics, each model's books, and the telemetry window it publishes.

Every request is accounted twice, once on the Prometheus metrics (for
operators) and once on its model's `ModelMeter` (for the collector, which
merges every router's `RouterTelemetry` into the load the scheduler acts on).
`ModelBooks` binds both for one model so the request path does no label
lookups.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ebbflow.router.core import ModelMeter, WindowStats
from ebbflow.runtime.wire import LATENCY_BUCKETS_S
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.registry import RegistryView
from ebbflow.v1 import load_pb2

log = logging.getLogger(__name__)

_BUCKETS = LATENCY_BUCKETS_S[::4] + (float("inf"),)


class RouterMetrics:
    """Prometheus metrics of the router, on an injected registry (gauges sum over worker processes)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def gauge(name: str, help: str, labels: list[str]) -> Gauge:
            return Gauge(name, help, labels, registry=registry, multiprocess_mode="livesum")

        def histogram(name: str, help: str, labels: list[str]) -> Histogram:
            return Histogram(name, help, labels, buckets=_BUCKETS, registry=registry)

        self.requests = Counter("ebbflow_router_requests", "Requests answered, by model and gRPC code", ["model", "code"], registry=registry)
        self.latency = histogram("ebbflow_router_request_duration_seconds", "Accept to last response byte at the router", ["model"])
        self.in_flight = gauge("ebbflow_router_in_flight", "Requests between accept and end of response", ["model"])
        self.upstream = Counter(
            "ebbflow_router_upstream_requests", "Calls to replicas, by replica and gRPC code", ["model", "replica", "code"], registry=registry
        )
        self.upstream_latency = histogram("ebbflow_router_upstream_duration_seconds", "Time a replica took to answer", ["model", "replica"])
        self.upstream_in_flight = gauge("ebbflow_router_upstream_in_flight", "Calls outstanding on a replica", ["model", "replica"])
        self.held = gauge("ebbflow_router_held", "Requests waiting for a ready replica", ["model"])
        self.hold_wait = histogram("ebbflow_router_hold_wait_seconds", "Time requests waited for a ready replica (cold start)", ["model"])
        self.retries = Counter("ebbflow_router_retries", "Requests resent to another replica", ["model"], registry=registry)
        self.rejections = Counter("ebbflow_router_rejections", "Requests refused before reaching a replica, by reason", ["model", "reason"], registry=registry)
        self.tenant_requests = Counter("ebbflow_router_tenant_requests", "Requests admitted, by tenant and model (router.require_api_key)", ["tenant", "model"], registry=registry)
        self.tenant_tokens = Counter(
            "ebbflow_router_tenant_tokens", "Tokens asked for by admitted requests (prompt plus max tokens), by tenant and model", ["tenant", "model"], registry=registry
        )
        self.tenant_rejections = Counter(
            "ebbflow_router_tenant_rejections",
            "Requests refused by the tenant check, by tenant ('' when no tenant is known) and reason: no_key, bad_key, revoked, model, rate, tokens",
            ["tenant", "reason"], registry=registry,
        )  # fmt: skip
        self.ejections = Counter("ebbflow_router_ejections", "Replicas taken out of routing after repeated failures", ["model", "replica"], registry=registry)
        self.ttft = histogram("ebbflow_router_ttft_seconds", "Streaming: request sent to first response", ["model"])
        self.slow = Counter(
            "ebbflow_router_slow_requests",
            "Requests answered OK but after the model's slo_latency_s, or (streaming) with a first response after its slo_ttft_s",
            ["model"], registry=registry,
        )
        self.tpot = histogram("ebbflow_router_tpot_seconds", "Streaming: time between consecutive responses of one request", ["model"])


def model_telemetry(model: str, stats: WindowStats) -> load_pb2.ModelTelemetry:
    """One model's closed telemetry window as published on ebbflow.router.telemetry."""
    return load_pb2.ModelTelemetry(
        model=model,
        arrivals=stats.arrivals,
        in_flight_avg=stats.in_flight_avg,
        in_flight_now=stats.in_flight_now,
        errors=stats.errors,
        latency=load_pb2.LatencyHistogram(upper_bounds_s=LATENCY_BUCKETS_S, counts=stats.latency_counts, sum_s=stats.latency_sum_s),
    )


@dataclass
class ModelBooks:
    """One model's accounting: the telemetry meter and its metric children, bound once (no label lookups per request)."""

    metrics: RouterMetrics
    model: str
    meter: ModelMeter
    _codes: dict[grpc.StatusCode, Any] = field(default_factory=dict)

    slo_latency_s: float = 0.0
    """The model's objectives (0: none), kept current from its policy by Telemetry.books."""
    slo_ttft_s: float = 0.0

    def __post_init__(self) -> None:
        self.in_flight = self.metrics.in_flight.labels(self.model)
        self.latency = self.metrics.latency.labels(self.model)
        self.slow = self.metrics.slow.labels(self.model)

    def accept(self, now_s: float) -> None:
        self.meter.accept(now_s)
        self.in_flight.inc()

    def answered(self, code: grpc.StatusCode, now_s: float, accepted_s: float, first_response_s: float = -1.0) -> None:
        """A request ended with `code`; `first_response_s` is a stream's time to its first response (-1: unary)."""
        seconds = now_s - accepted_s
        self.meter.finish(now_s, seconds, ok=code == grpc.StatusCode.OK)
        self.in_flight.dec()
        self.latency.observe(seconds)
        if code == grpc.StatusCode.OK and misses_objective(seconds, first_response_s, self.slo_latency_s, self.slo_ttft_s):
            self.slow.inc()
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.metrics.requests.labels(self.model, code.name)
        child.inc()


def misses_objective(seconds: float, first_response_s: float, slo_latency_s: float, slo_ttft_s: float) -> bool:
    """Whether an answered request counts against the model's latency objectives (EbbflowLatencyBudgetBurn)."""
    return 0 < slo_latency_s < seconds or (first_response_s >= 0 and 0 < slo_ttft_s < first_response_s)


class Telemetry:
    """Every model's books, and the RouterTelemetry window closed and published every telemetry_interval_s."""

    def __init__(self, config: RouterConfig, bus: Bus, view: RegistryView, metrics: RouterMetrics, router_id: str) -> None:
        self.config = config
        self.bus = bus
        self.view = view
        self.metrics = metrics
        self.router_id = router_id
        self._books: dict[str, ModelBooks] = {}

    def books(self, model: str, now_s: float) -> ModelBooks:
        books = self._books.get(model)
        if books is None:
            books = self._books[model] = ModelBooks(self.metrics, model, ModelMeter(window_start_s=now_s))
        policy = self.view.policies.get(model)  # read per request: a changed objective counts from the next one
        if policy is not None:
            books.slo_latency_s, books.slo_ttft_s = policy.slo_latency_s, policy.slo_ttft_s
        return books

    def window(self, now_s: float, wall_s: float) -> load_pb2.RouterTelemetry:
        """Close the window for every known model (zero arrivals included: no data is not zero load)."""
        models = []
        for model in sorted(self.view.known_models() | set(self._books)):
            models.append(model_telemetry(model, self.books(model, now_s).meter.close_window(now_s)))
        return load_pb2.RouterTelemetry(router_id=self.router_id, window_end_unix_s=wall_s, window_s=self.config.telemetry_interval_s, models=models)

    async def publish(self, stop: asyncio.Event) -> None:
        """Publish a window every telemetry_interval_s once the registry view is loaded: runs until stop is set."""
        while not stop.is_set():
            await wait_any(self.config.telemetry_interval_s, stop)
            if stop.is_set():
                return
            if not self.view.loaded:
                continue
            message = self.window(time.monotonic(), time.time())
            try:
                await self.bus.nc.publish(subjects.ROUTER_TELEMETRY, message.SerializeToString())
            except Exception as error:  # NATS down: telemetry is loss-tolerant, the next window follows
                log.warning("publishing router telemetry failed: %s", error)
