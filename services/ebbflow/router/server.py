"""The router's shell: serves `inference.GRPCInferenceService` and forwards to Triton replicas.

Requests and responses cross as bytes: the router reads the model name and
request id off the wire (router.core.read_request_head) and never decodes
tensors. Where a request goes is decided by the pure `pick_replica` over a
snapshot of the ready replicas, which a follower task keeps current from the
registry (so the request path does no registry work).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import grpc
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tritonclient.grpc import service_pb2

from ebbflow import __version__
from ebbflow.policy import routing_from_proto
from ebbflow.router.answers import metadata_from_config, sum_statistics
from ebbflow.router.core import (
    LATENCY_BUCKETS_S,
    Candidate,
    Ejector,
    HoldQueue,
    MalformedRequest,
    ModelMeter,
    QueueFull,
    RequestHead,
    RetryBudget,
    Routing,
    WindowStats,
    pick_replica,
    read_request_head,
)
from ebbflow.router.refusal import Refusal
from ebbflow.router.streaming import StreamRelay
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.registry import DRAINING, READY, STARTING, RegistryView
from ebbflow.v1 import load_pb2, registry_pb2

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

# Upstream failures where the replica did no work we could lose: safe to resend elsewhere.
_RETRYABLE = grpc.StatusCode.UNAVAILABLE
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
        self.ejections = Counter("ebbflow_router_ejections", "Replicas taken out of routing after repeated failures", ["model", "replica"], registry=registry)
        self.ttft = histogram("ebbflow_router_ttft_seconds", "Streaming: request sent to first response", ["model"])
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

    def __post_init__(self) -> None:
        self.in_flight = self.metrics.in_flight.labels(self.model)
        self.latency = self.metrics.latency.labels(self.model)

    def accept(self, now_s: float) -> None:
        self.meter.accept(now_s)
        self.in_flight.inc()

    def answered(self, code: grpc.StatusCode, now_s: float, accepted_s: float) -> None:
        seconds = now_s - accepted_s
        self.meter.finish(now_s, seconds, ok=code == grpc.StatusCode.OK)
        self.in_flight.dec()
        self.latency.observe(seconds)
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.metrics.requests.labels(self.model, code.name)
        child.inc()


@dataclass
class Upstream:
    """One replica as this router uses it: a channel, cached callables and its own in-flight count."""

    key: str
    entry: registry_pb2.ReplicaEntry
    channel: grpc.aio.Channel
    metrics: RouterMetrics
    in_flight: int = 0
    acked_in_flight: int | None = None
    """None until this router acknowledged the replica's drain; then what was in flight at the last acknowledgement."""
    _calls: dict[str, Any] = field(default_factory=dict)
    _codes: dict[grpc.StatusCode, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.in_flight_gauge = self.metrics.upstream_in_flight.labels(self.entry.model, self.entry.replica_id)
        self.latency = self.metrics.upstream_latency.labels(self.entry.model, self.entry.replica_id)

    @property
    def address(self) -> str:
        return f"{self.entry.host}:{self.entry.grpc_port}"

    def unary(self, method: str) -> Any:
        call = self._calls.get(method)
        if call is None:
            call = self._calls[method] = self.channel.unary_unary(f"/{SERVICE}/{method}")
        return call

    def stream(self) -> Any:
        return self.channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")

    def begin(self) -> None:
        self.in_flight += 1
        self.in_flight_gauge.inc()

    def end(self, code: grpc.StatusCode, seconds: float) -> None:
        self.in_flight -= 1
        self.in_flight_gauge.dec()
        self.latency.observe(seconds)
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.metrics.upstream.labels(self.entry.model, self.entry.replica_id, code.name)
        child.inc()


@dataclass
class HeldModel:
    """Requests of one model waiting for a ready replica, in arrival order."""

    queue: HoldQueue
    waiters: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    waker: asyncio.Task[None] | None = None


_NOT_FORWARDED = (":", "grpc-", "user-agent")


def _forwardable(context: grpc.aio.ServicerContext) -> list[tuple[str, str | bytes]] | None:
    """The client's own metadata (auth, trace context, custom headers); None when there is none (cheaper to send)."""
    metadata = [(k, v) for k, v in context.invocation_metadata() or () if not k.startswith(_NOT_FORWARDED)]
    return metadata or None


class Router:
    def __init__(
        self,
        config: RouterConfig,
        bus: Bus,
        view: RegistryView,
        metrics: RouterMetrics,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.view = view
        self.metrics = metrics
        self.tracer = tracer
        self.router_id = f"{socket.gethostname()}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self.upstreams: dict[str, Upstream] = {}
        self._ready: dict[str, list[Upstream]] = {}
        self._routing: dict[str, Routing] = {}
        self._pending: dict[str, float] = {}
        self._held: dict[str, HeldModel] = {}
        self._books: dict[str, ModelBooks] = {}
        self._ejector = Ejector(config.eject_after_failures, config.eject_s)
        self._retry_budget = RetryBudget(config.retry_buffer_bytes)
        self._counter = itertools.count()
        self._random = random.Random()
        self._background: set[asyncio.Task[Any]] = set()

    # ---- following the registry ----------------------------------------------

    def sync(self) -> None:
        """Make the upstream table and routing policies match the view; release held requests; acknowledge drains."""
        self._routing = {model: Routing(routing_from_proto(policy.routing)) for model, policy in self.view.policies.items()}
        alive = {key: entry for key, entry in self.view.replicas.items() if entry.state in (READY, DRAINING)}
        for key, upstream in list(self.upstreams.items()):
            entry = alive.get(key)
            if entry is None or upstream.address != f"{entry.host}:{entry.grpc_port}":
                del self.upstreams[key]
                self._later(upstream.channel.close())
        ready: dict[str, list[Upstream]] = {}
        for key, entry in alive.items():
            upstream = self.upstreams.get(key)
            if upstream is None:
                upstream = self.upstreams[key] = Upstream(key, entry, self._open_channel(entry), self.metrics)
            upstream.entry = entry
            if entry.state == READY:
                ready.setdefault(entry.model, []).append(upstream)
            elif upstream.acked_in_flight is None:
                self._acknowledge_drain(upstream)
        self._ready = ready
        self._ejector.forget(set(alive))
        for model, held in self._held.items():
            if held.waiters and ready.get(model):
                for ticket in held.queue.in_order():
                    waiter = held.waiters.get(ticket)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)

    def _open_channel(self, entry: registry_pb2.ReplicaEntry) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            f"{entry.host}:{entry.grpc_port}",
            options=[
                ("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.max_send_message_length", self.config.max_message_bytes),
            ],
        )

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep the upstream table current: runs until stop is set."""
        while not stop.is_set():
            changed = self.view.changed
            self.sync()
            await wait_any(1.0, stop, changed)

    def _acknowledge_drain(self, upstream: Upstream) -> None:
        """DESIGN.md "Drain": this worker sends no new requests there; say how many of its own still run."""
        upstream.acked_in_flight = upstream.in_flight
        ack = registry_pb2.DrainAck(
            router_id=self.router_id, model=upstream.entry.model, replica_id=upstream.entry.replica_id, in_flight=upstream.in_flight
        )
        self._later(self.bus.nc.publish(subjects.drain_ack_subject(upstream.entry.model, upstream.entry.replica_id), ack.SerializeToString()))

    def _later(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def on_load(self, snapshot: load_pb2.LoadSnapshot) -> None:
        """Triton's pending count per replica from the collector: a tie-breaker, never the main signal."""
        for replica in snapshot.replicas:
            self._pending[subjects.replica_key(snapshot.model, replica.replica_id)] = replica.pending_requests

    # ---- picking and holding ----------------------------------------------------

    def pick(self, model: str, avoid: set[str] | frozenset[str] = frozenset()) -> Upstream | None:
        ready = self._ready.get(model)
        if not ready:
            return None
        if len(ready) == 1:  # the common small-fleet case needs no scoring
            only = ready[0]
            return None if only.key in avoid else only
        by_key = {u.key: u for u in ready if u.key not in avoid}
        if not by_key:
            return None
        now = time.monotonic()
        candidates = self._ejector.usable([Candidate(k, u.in_flight, self._pending.get(k, 0.0)) for k, u in by_key.items()], now)
        routing = self._routing.get(model, Routing.LEAST_OUTSTANDING)
        draw = self._random.getrandbits(32) if routing is Routing.POWER_OF_TWO else next(self._counter)
        chosen = pick_replica(candidates, draw, routing)
        return by_key[chosen.key] if chosen else None

    async def acquire(self, model: str, size: int, avoid: set[str], hold_until: float, context: grpc.aio.ServicerContext) -> Upstream:
        """A ready replica not in `avoid`, holding the request (bounded) while there is none.

        A wake-up clears `avoid`: time has passed, and a replica that failed
        may be back (restarted in place under the same registry entry).
        """
        while True:
            upstream = self.pick(model, avoid)
            if upstream is not None:
                return upstream
            await self._hold(model, size, hold_until, context)
            avoid.clear()

    async def _hold(self, model: str, size: int, hold_until: float, context: grpc.aio.ServicerContext) -> None:
        held = self._held.get(model)
        if held is None:
            held = self._held[model] = HeldModel(HoldQueue(self.config.hold_max_requests, self.config.hold_max_bytes))
        try:
            ticket = held.queue.admit(size)
        except QueueFull as full:
            self.metrics.rejections.labels(model, "queue_full").inc()
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"model '{model}' has no ready replica and its hold queue is full ({full}); retry with backoff",
            ) from None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        held.waiters[ticket] = waiter
        if held.waker is None or held.waker.done():
            held.waker = asyncio.create_task(self._wake_while_held(model, held), name=f"wake {model}")
        held_gauge = self.metrics.held.labels(model)
        held_gauge.inc()
        started = time.monotonic()
        remaining = context.time_remaining()
        client_until = started + remaining if remaining is not None else float("inf")
        try:
            await asyncio.wait_for(waiter, max(0.0, min(hold_until, client_until) - started))
        except asyncio.TimeoutError:
            starting = sum(1 for r in self.view.of_model(model) if r.state == STARTING)
            if client_until <= hold_until:
                self.metrics.rejections.labels(model, "client_deadline").inc()
                message = f"the client deadline passed while waiting for a ready replica of model '{model}' ({starting} starting)"
            else:
                self.metrics.rejections.labels(model, "hold_timeout").inc()
                message = (
                    f"no ready replica of model '{model}' within the {self.config.hold_timeout_s:g} s hold limit "
                    f"({starting} starting); the request was not sent; check `ebbflow status`"
                )
            raise Refusal(grpc.StatusCode.DEADLINE_EXCEEDED, message) from None
        finally:
            held.queue.leave(ticket)
            held.waiters.pop(ticket, None)
            held_gauge.dec()
            self.metrics.hold_wait.labels(model).observe(time.monotonic() - started)

    async def _wake_while_held(self, model: str, held: HeldModel) -> None:
        """Publish a wake-up at once and every second while requests of `model` are held."""
        while held.waiters:
            try:
                await self.bus.nc.publish(subjects.wakeup_subject(model), model.encode())
            except Exception as error:  # NATS away: the next second tries again
                log.warning("publishing a wake-up for %s failed: %s", model, error)
            await asyncio.sleep(1.0)

    # ---- forwarding ---------------------------------------------------------------

    def is_known(self, model: str) -> bool:
        return model in self.view.policies or model in self.view.known_models()  # the first test is the cheap common case

    def known_list(self) -> str:
        return ", ".join(sorted(self.view.known_models())) or "none"

    def read_head(self, request: bytes) -> RequestHead:
        """The request's model and id, or a Refusal for garbled bytes or a model nobody serves."""
        try:
            head = read_request_head(request)
        except MalformedRequest as error:
            self.metrics.rejections.labels("", "malformed").inc()
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {error}") from None
        if not self.is_known(head.model):
            self.metrics.rejections.labels("", "unknown_model").inc()
            raise Refusal(grpc.StatusCode.NOT_FOUND, f"unknown model '{head.model}'; models served here: {self.known_list()}")
        return head

    def books(self, model: str, now_s: float) -> ModelBooks:
        books = self._books.get(model)
        if books is None:
            books = self._books[model] = ModelBooks(self.metrics, model, ModelMeter(window_start_s=now_s))
        return books

    def finished(self, upstream: Upstream, code: grpc.StatusCode, seconds: float) -> None:
        """A call on `upstream` ended; a draining replica hears once this router has nothing left there."""
        upstream.end(code, seconds)
        if upstream.acked_in_flight and upstream.in_flight == 0:
            self._acknowledge_drain(upstream)

    async def forward(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext, model: str, metadata: list[tuple[str, Any]] | None, span: Any = None
    ) -> bytes:
        """One unary call on a replica, resent elsewhere after a failure before any response (bounded)."""
        started = time.monotonic()
        hold_until = started + self.config.hold_timeout_s
        size = len(request)
        keep_for_retry = self.config.max_retries > 0 and self._retry_budget.take(size)
        avoid: set[str] = set()
        attempt = 0
        try:
            while True:
                upstream = self.pick(model, avoid)
                if upstream is None:
                    upstream = await self.acquire(model, size, avoid, hold_until, context)
                    attempt = 0  # held until a replica was back: resends count afresh, the hold limit bounds them
                sent = time.monotonic()
                upstream.begin()
                code = grpc.StatusCode.OK
                try:
                    response = await upstream.unary(method)(request, timeout=context.time_remaining(), metadata=metadata)
                    self._ejector.record(upstream.key, True, sent)
                    if span is not None:
                        span.set_attribute("ebbflow.replica", upstream.entry.replica_id)
                        span.set_attribute("ebbflow.attempts", attempt + 1)
                    return response
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    if code != _RETRYABLE:
                        raise Refusal(code, error.details() or f"replica {upstream.key} failed with {code.name}") from None
                    if self._ejector.record(upstream.key, False, time.monotonic()):
                        log.warning("replica %s ejected for %g s after repeated failures", upstream.key, self.config.eject_s)
                        self.metrics.ejections.labels(model, upstream.entry.replica_id).inc()
                    remaining = context.time_remaining()
                    if not keep_for_retry or attempt >= self.config.max_retries or (remaining is not None and remaining <= 0):
                        raise Refusal(code, f"replica {upstream.key} unavailable and no retry left: {error.details()}") from None
                    log.info("replica %s of %s unavailable (%s); resending elsewhere", upstream.key, model, error.details())
                    attempt += 1
                    avoid.add(upstream.key)
                    self.metrics.retries.labels(model).inc()
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                finally:
                    self.finished(upstream, code, time.monotonic() - sent)
        finally:
            if keep_for_retry:
                self._retry_budget.give_back(size)

    def upstream_metadata(self, context: grpc.aio.ServicerContext) -> list[tuple[str, Any]] | None:
        """The client's metadata for the replica, with this process's trace context when tracing."""
        metadata = _forwardable(context)
        if self.tracer is None:
            return metadata
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return [(k, v) for k, v in metadata or () if k not in carrier] + list(carrier.items())

    # ---- handlers -------------------------------------------------------------------

    async def model_infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            head = self.read_head(request)
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)
        model = head.model
        started = time.monotonic()
        books = self.books(model, started)
        books.accept(started)
        code = grpc.StatusCode.OK
        try:
            if self.tracer is None:
                return await self.forward("ModelInfer", request, context, model, _forwardable(context))
            parent = propagate.extract(dict(_forwardable(context) or ()))
            with self.tracer.start_as_current_span("ModelInfer", context=parent, kind=trace.SpanKind.SERVER) as span:
                span.set_attribute("ebbflow.model", model)
                span.set_attribute("ebbflow.request_id", head.id)
                try:
                    return await self.forward("ModelInfer", request, context, model, self.upstream_metadata(context), span)
                except Refusal as refusal:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{refusal.code.name}: {refusal.message}"))
                    raise
        except Refusal as refusal:
            code = refusal.code
            await context.abort(refusal.code, refusal.message)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            books.answered(code, time.monotonic(), started)
        raise AssertionError("unreachable")  # context.abort raises

    async def model_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Forwarded to a replica; built from the model's config when none is ready (no need to wait for one)."""
        return await self._answer(request, context, "ModelMetadata", lambda c: metadata_from_config(c).SerializeToString())

    async def model_config(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._answer(request, context, "ModelConfig", lambda c: service_pb2.ModelConfigResponse(config=c).SerializeToString())

    async def _answer(self, request: bytes, context: grpc.aio.ServicerContext, method: str, from_config: Callable[[Any], bytes]) -> bytes:
        try:
            model = self.read_head(request).model
            config = self.view.model_configs.get(model)
            if self._ready.get(model) or config is None:
                return await self.forward(method, request, context, model, _forwardable(context))
            return from_config(config)
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)
        raise AssertionError("unreachable")  # context.abort raises

    async def model_statistics(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Statistics summed over every ready replica (zeros at zero replicas)."""
        try:
            model = self.read_head(request).model
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)
        metadata = _forwardable(context)
        ready = list(self._ready.get(model, ()))
        answers = await asyncio.gather(
            *(u.unary("ModelStatistics")(request, timeout=context.time_remaining(), metadata=metadata) for u in ready), return_exceptions=True
        )
        replies = [service_pb2.ModelStatisticsResponse.FromString(a) for a in answers if isinstance(a, bytes)]
        if ready and not replies:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no replica of '{model}' answered ModelStatistics: {answers[0]}")
        return sum_statistics(model, replies).SerializeToString()

    async def model_ready(self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext) -> service_pb2.ModelReadyResponse:
        """Ready when a replica is, or when the model has a policy: requests are then held while it scales from zero."""
        policy = self.view.policies.get(request.name)
        return service_pb2.ModelReadyResponse(ready=bool(self._ready.get(request.name)) or (policy is not None and policy.max_replicas > 0))

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self.view.loaded and self.bus.nc.is_connected)

    async def server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> service_pb2.ServerMetadataResponse:
        return service_pb2.ServerMetadataResponse(name="ebbflow-router", version=__version__, extensions=[])

    async def model_stream_infer(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        relay = StreamRelay(self, context)
        async for response in relay.run(request_iterator):
            yield response

    def refuse(self, code: grpc.StatusCode, message: str) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(code, message)

        return handler

    def handler(self) -> grpc.GenericRpcHandler:
        """The whole GRPCInferenceService: every method is answered, forwarded or refused with a reason."""
        raw = lambda fn: grpc.unary_unary_rpc_method_handler(fn)  # noqa: E731 - bytes in, bytes out
        typed = lambda fn, req, resp: grpc.unary_unary_rpc_method_handler(  # noqa: E731
            fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
        )
        pb = service_pb2
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "ModelInfer": raw(self.model_infer),
            "ModelMetadata": raw(self.model_metadata),
            "ModelConfig": raw(self.model_config),
            "ModelStatistics": raw(self.model_statistics),
            "ModelReady": typed(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerLive": typed(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": typed(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ServerMetadata": typed(self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.model_stream_infer),
        }
        admin = (
            "models are loaded and unloaded by the ebbflow control plane, not through the router: "
            "change the model's policy (KV bucket 'policies', or the config file's models section and `ebbflow up`)"
        )
        for method in ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"):
            handlers[method] = raw(self.refuse(grpc.StatusCode.PERMISSION_DENIED, admin))
        shm = "shared memory is local to one replica and cannot cross the router; send tensors in the request"
        for method in (
            "SystemSharedMemoryStatus",
            "SystemSharedMemoryRegister",
            "SystemSharedMemoryUnregister",
            "CudaSharedMemoryStatus",
            "CudaSharedMemoryRegister",
            "CudaSharedMemoryUnregister",
        ):
            handlers[method] = raw(self.refuse(grpc.StatusCode.UNIMPLEMENTED, shm))
        for method in ("TraceSetting", "LogSettings"):
            handlers[method] = raw(self.refuse(grpc.StatusCode.UNIMPLEMENTED, f"{method} is per replica and not offered by the router"))
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    # ---- telemetry ----------------------------------------------------------------------

    def telemetry(self, now_s: float, wall_s: float) -> load_pb2.RouterTelemetry:
        """Close the window for every known model (zero arrivals included: no data is not zero load)."""
        models = []
        for model in sorted(self.view.known_models() | set(self._books)):
            models.append(model_telemetry(model, self.books(model, now_s).meter.close_window(now_s)))
        return load_pb2.RouterTelemetry(router_id=self.router_id, window_end_unix_s=wall_s, window_s=self.config.telemetry_interval_s, models=models)

    async def publish_telemetry(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_any(self.config.telemetry_interval_s, stop)
            if stop.is_set():
                return
            if not self.view.loaded:
                continue
            message = self.telemetry(time.monotonic(), time.time())
            try:
                await self.bus.nc.publish(subjects.ROUTER_TELEMETRY, message.SerializeToString())
            except Exception as error:  # NATS down: telemetry is loss-tolerant, the next window follows
                log.warning("publishing router telemetry failed: %s", error)

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.channel.close()
        self.upstreams.clear()
        self._ready.clear()
        for task in list(self._background):
            task.cancel()
        for held in self._held.values():
            if held.waker is not None:
                held.waker.cancel()
