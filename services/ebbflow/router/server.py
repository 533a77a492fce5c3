"""The router's shell: serves `inference.GRPCInferenceService`, every method answered, forwarded or refused.

Requests and responses cross as bytes: the router reads the model name and
request id off the wire (router.core.read_request_head) and never decodes
tensors. `Router` wires the parts together: the upstream table that follows
the registry (router.upstreams), requests held while a model has no ready
replica (router.holding), unary forwarding with resends (router.forwarding),
streams (router.streaming) and the books behind telemetry (router.telemetry).
What the router answers itself, without a replica, is built by router.answers.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
from typing import Any, Awaitable, Callable

import grpc
from opentelemetry import propagate, trace
from tritonclient.grpc import service_pb2

from ebbflow import __version__
from ebbflow.router import demand
from ebbflow.router.answers import REFUSED_METHODS, metadata_from_config, sum_statistics
from ebbflow.router.core import SERVICE, MalformedRequest, RequestHead, read_request_head
from ebbflow.router.forwarding import Forwarder, forwardable, with_trace_context
from ebbflow.router.holding import Holds
from ebbflow.router.refusal import Refusal
from ebbflow.router.shedding import retry_after_s, shed_limit
from ebbflow.router.streaming import StreamRelay
from ebbflow.router.telemetry import RouterMetrics, Telemetry
from ebbflow.router.tenants import Denial, Gate
from ebbflow.router.upstreams import Upstreams
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.registry import RegistryView
from ebbflow.v1 import load_pb2


def authorization(context: grpc.aio.ServicerContext) -> str | None:
    return dict(context.invocation_metadata() or ()).get("authorization")


async def abort(context: grpc.aio.ServicerContext, refusal: Refusal) -> None:
    """End the call with the refusal's code and message; a tenant over its limit also gets `retry-after` (seconds)."""
    if isinstance(refusal, Denial) and refusal.retry_after_s:
        context.set_trailing_metadata((("retry-after", refusal.retry_after),))
    await context.abort(refusal.code, refusal.message)


class Router:
    """The GRPCInferenceService servicer of one router (one worker process), and the parts it forwards through."""

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
        self.upstreams = Upstreams(config, bus, view, metrics, self.router_id)
        self.holds = Holds(config, bus, view, metrics, self.upstreams)
        self.forwarder = Forwarder(config, metrics, self.upstreams, self.holds)
        self.telemetry = Telemetry(config, bus, view, metrics, self.router_id)
        self.gate = Gate(config.require_api_key)

    # ---- following the registry ----------------------------------------------

    def sync(self) -> None:
        """Make the upstream table match the view (acknowledging drains), then release held requests that can go."""
        self.upstreams.sync()
        self.holds.release(self.upstreams.ready)

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep the upstream table current: runs until stop is set."""
        while not stop.is_set():
            changed = self.view.changed
            self.sync()
            await wait_any(1.0, stop, changed)

    def on_load(self, snapshot: load_pb2.LoadSnapshot) -> None:
        self.upstreams.on_load(snapshot)

    # ---- reading requests -----------------------------------------------------------

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

    def admit(self, authorization: str | None, model: str, tokens: Callable[[], int]) -> None:
        """The tenant check (router.tenants) and the overload check (router.shedding), with their metrics; a
        Denial raised."""
        tenant = None
        if self.gate.required:
            counted = functools.cache(tokens)
            try:
                tenant = self.gate.admit(authorization, model, counted, self.view.tenant_of_key, time.monotonic())
            except Denial as denial:
                self.metrics.tenant_rejections.labels(denial.tenant, denial.reason).inc()
                raise
            assert tenant is not None
        policy = self.view.policies.get(model)
        ready = len(self.upstreams.ready.get(model, ()))
        limit = shed_limit(policy, ready, self.config.workers, tenant.priority if tenant else 0)
        if limit is not None:
            in_flight = self.telemetry.books(model, time.monotonic()).meter.in_flight
            if in_flight >= limit:
                assert policy is not None
                self.metrics.rejections.labels(model, "overload").inc()
                name = tenant.name if tenant else ""
                if tenant:
                    self.metrics.tenant_rejections.labels(name, "overload").inc()
                retry = retry_after_s(policy)
                raise Denial(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"model '{model}' is overloaded: {in_flight} requests in flight at its {ready} replicas (max_replicas), over the "
                    f"limit of {limit:g} (shed_in_flight_per_replica {policy.shed_in_flight_per_replica:g}); retry after {retry:g} s",
                    "overload", name, retry,
                )  # fmt: skip
        if tenant is not None:
            self.metrics.tenant_requests.labels(tenant.name, model).inc()
            self.metrics.tenant_tokens.labels(tenant.name, model).inc(counted())

    def upstream_metadata(self, context: grpc.aio.ServicerContext) -> list[tuple[str, Any]] | None:
        """The client's metadata for the replica, with this process's trace context when tracing."""
        metadata = forwardable(context)
        if self.tracer is None:
            return metadata
        return with_trace_context(metadata)

    # ---- handlers -------------------------------------------------------------------

    async def model_infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            head = self.read_head(request)
            self.admit(authorization(context), head.model, lambda: demand.of_grpc_infer(request))
        except Refusal as refusal:
            await abort(context, refusal)
        model = head.model
        started = time.monotonic()
        books = self.telemetry.books(model, started)
        books.accept(started)
        code = grpc.StatusCode.OK
        try:
            if self.tracer is None:
                return await self.forwarder.forward("ModelInfer", request, context, model, forwardable(context))
            parent = propagate.extract(dict(forwardable(context) or ()))
            with self.tracer.start_as_current_span("ModelInfer", context=parent, kind=trace.SpanKind.SERVER) as span:
                span.set_attribute("ebbflow.model", model)
                span.set_attribute("ebbflow.request_id", head.id)
                try:
                    return await self.forwarder.forward("ModelInfer", request, context, model, self.upstream_metadata(context), span)
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
            if self.upstreams.ready.get(model) or config is None:
                return await self.forwarder.forward(method, request, context, model, forwardable(context))
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
        metadata = forwardable(context)
        ready = list(self.upstreams.ready.get(model, ()))
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
        ready = bool(self.upstreams.ready.get(request.name)) or (policy is not None and policy.max_replicas > 0)
        return service_pb2.ModelReadyResponse(ready=ready)

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
        for method, (code, message) in REFUSED_METHODS.items():
            handlers[method] = raw(self.refuse(code, message))
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    async def close(self) -> None:
        await self.upstreams.close()
        self.holds.close()
