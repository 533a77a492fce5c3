"""The router's shell: serves `inference.GRPCInferenceService` and forwards to Triton replicas.

ModelInfer and the per-model calls cross as bytes: the router reads only the
model name off the wire (router.core.read_model_name) and never decodes
tensors. Everything else about where a request goes is decided by the pure
`pick_replica`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from typing import Any, Awaitable, Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tritonclient.grpc import service_pb2

from ebbflow import __version__
from ebbflow.router.core import LATENCY_BUCKETS_S, Candidate, MalformedRequest, ModelMeter, pick_replica, read_model_name
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.registry import STARTING, RegistryView
from ebbflow.v1 import load_pb2, registry_pb2

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

# Upstream failures that happened before the replica did any work: safe to retry elsewhere.
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE}


class RouterMetrics:
    """Prometheus metrics of the router, on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("ebbflow_router_requests", "Requests handled, by model and gRPC code", ["model", "code"], registry=registry)
        self.in_flight = Gauge("ebbflow_router_in_flight", "Requests between accept and end of response", ["model"], registry=registry)
        self.latency = Histogram(
            "ebbflow_router_request_duration_seconds",
            "End-to-end request latency at the router",
            ["model"],
            buckets=LATENCY_BUCKETS_S[::4] + (float("inf"),),
            registry=registry,
        )
        self.retries = Counter("ebbflow_router_retries", "Requests retried on another replica", ["model"], registry=registry)
        self.held = Gauge("ebbflow_router_held", "Requests waiting for a ready replica", ["model"], registry=registry)


class Router:
    def __init__(self, config: RouterConfig, bus: Bus, view: RegistryView, metrics: RouterMetrics) -> None:
        self.config = config
        self.bus = bus
        self.view = view
        self.metrics = metrics
        self.router_id = f"{socket.gethostname()}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self._in_flight: dict[str, int] = {}
        self._meters: dict[str, ModelMeter] = {}
        self._rotation = itertools.count()

    # ---- replica selection -------------------------------------------------

    def _channel(self, replica: registry_pb2.ReplicaEntry) -> grpc.aio.Channel:
        key = subjects.replica_key(replica.model, replica.replica_id)
        address = f"{replica.host}:{replica.grpc_port}"
        cached = self._channels.get(key)
        if cached is None or cached[0] != address:
            channel = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_receive_message_length", self.config.max_message_bytes),
                    ("grpc.max_send_message_length", self.config.max_message_bytes),
                ],
            )
            self._channels[key] = (address, channel)
            return channel
        return cached[1]

    def _prune_channels(self) -> None:
        for key in list(self._channels):
            if key not in self.view.replicas:
                _, channel = self._channels.pop(key)
                asyncio.get_running_loop().create_task(channel.close())

    def _pick(self, model: str, exclude: set[str]) -> registry_pb2.ReplicaEntry | None:
        ready = {subjects.replica_key(r.model, r.replica_id): r for r in self.view.ready(model)}
        candidates = [Candidate(key, self._in_flight.get(key, 0)) for key in ready if key not in exclude]
        chosen = pick_replica(candidates, next(self._rotation))
        return ready[chosen.key] if chosen else None

    async def _wait_for_replica(self, model: str, exclude: set[str], context: grpc.aio.ServicerContext) -> registry_pb2.ReplicaEntry:
        """A ready replica of a known model, holding the request while none is (bounded)."""
        replica = self._pick(model, exclude)
        if replica is not None:
            return replica
        deadline = time.monotonic() + self.config.hold_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            deadline = min(deadline, time.monotonic() + remaining)
        self.metrics.held.labels(model).inc()
        try:
            while True:
                await self.bus.nc.publish(subjects.wakeup_subject(model), model.encode())
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self.view.wait_changed(min(1.0, left))
                replica = self._pick(model, exclude)
                if replica is not None:
                    return replica
        finally:
            self.metrics.held.labels(model).dec()
        starting = sum(1 for r in self.view.of_model(model) if r.state == STARTING)
        if remaining is not None and remaining <= self.config.hold_timeout_s:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline passed while waiting for a ready replica of model '{model}' ({starting} starting)"
            )
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"no ready replica of model '{model}' within {self.config.hold_timeout_s:.0f} s ({starting} starting); check `ebbflow status`",
        )
        raise AssertionError("unreachable")

    # ---- forwarding ---------------------------------------------------------

    async def _forward(self, method: str, request: bytes, context: grpc.aio.ServicerContext, count: bool) -> bytes:
        try:
            model = read_model_name(request)
        except MalformedRequest as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {error}")
        if model not in self.view.known_models():
            known = ", ".join(sorted(self.view.known_models())) or "none"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{model}'; models served here: {known}")
        started = time.monotonic()
        meter = self._meter(model, started)
        if count:
            meter.accept(started)
            self.metrics.in_flight.labels(model).inc()
        code = grpc.StatusCode.OK
        try:
            return await self._call_replicas(model, method, request, context)
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if count:
                now = time.monotonic()
                meter.finish(now, now - started, ok=code == grpc.StatusCode.OK)
                self.metrics.in_flight.labels(model).dec()
                self.metrics.latency.labels(model).observe(now - started)
                self.metrics.requests.labels(model, code.name).inc()

    async def _call_replicas(self, model: str, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        tried: set[str] = set()
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if not k.startswith((":", "grpc-")))
        while True:
            replica = await self._wait_for_replica(model, tried, context)
            key = subjects.replica_key(replica.model, replica.replica_id)
            tried.add(key)
            call = self._channel(replica).unary_unary(f"/{SERVICE}/{method}")
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            try:
                return await call(request, timeout=context.time_remaining(), metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if error.code() in _RETRYABLE and self._pick(model, tried) is not None:
                    log.info("replica %s of %s unavailable (%s); retrying on another", key, model, error.details())
                    self.metrics.retries.labels(model).inc()
                    continue
                await context.abort(error.code(), error.details() or f"replica {key} failed with {error.code().name}")
            finally:
                self._in_flight[key] -= 1

    # ---- handlers -----------------------------------------------------------

    async def model_infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._forward("ModelInfer", request, context, count=True)

    async def model_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._forward("ModelMetadata", request, context, count=False)

    async def model_config(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._forward("ModelConfig", request, context, count=False)

    async def model_statistics(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._forward("ModelStatistics", request, context, count=False)

    async def model_ready(self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext) -> service_pb2.ModelReadyResponse:
        return service_pb2.ModelReadyResponse(ready=bool(self.view.ready(request.name)))

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self.view.loaded and self.bus.nc.is_connected)

    async def server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> service_pb2.ServerMetadataResponse:
        return service_pb2.ServerMetadataResponse(name="ebbflow-router", version=__version__, extensions=[])

    async def model_stream_infer(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "streaming through the router is not available yet; use unary ModelInfer")
        yield  # pragma: no cover - makes this an async generator

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
        admin = "models are loaded and unloaded by the ebbflow control plane (scheduler policies), not through the router"
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

    # ---- telemetry ----------------------------------------------------------

    def _meter(self, model: str, now_s: float) -> ModelMeter:
        meter = self._meters.get(model)
        if meter is None:
            meter = self._meters[model] = ModelMeter(window_start_s=now_s)
        return meter

    def telemetry(self, now_s: float, wall_s: float) -> load_pb2.RouterTelemetry:
        """Close the window for every known model (zero arrivals included: no data is not zero load)."""
        models = []
        for model in sorted(self.view.known_models() | set(self._meters)):
            stats = self._meter(model, now_s).close_window(now_s)
            models.append(
                load_pb2.ModelTelemetry(
                    model=model,
                    arrivals=stats.arrivals,
                    in_flight_avg=stats.in_flight_avg,
                    in_flight_now=stats.in_flight_now,
                    errors=stats.errors,
                    latency=load_pb2.LatencyHistogram(
                        upper_bounds_s=LATENCY_BUCKETS_S, counts=stats.latency_counts, sum_s=stats.latency_sum_s
                    ),
                )
            )
        return load_pb2.RouterTelemetry(router_id=self.router_id, window_end_unix_s=wall_s, window_s=self.config.telemetry_interval_s, models=models)

    async def publish_telemetry(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.telemetry_interval_s)
                return
            except asyncio.TimeoutError:
                pass
            if not self.view.loaded:
                continue
            message = self.telemetry(time.monotonic(), time.time())
            self._prune_channels()
            try:
                await self.bus.nc.publish(subjects.ROUTER_TELEMETRY, message.SerializeToString())
            except Exception as error:  # NATS down: telemetry is loss-tolerant, the next window follows
                log.warning("publishing router telemetry failed: %s", error)

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close()
        self._channels.clear()
