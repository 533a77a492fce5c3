"""KEDA's external scaler, served by the scheduler: KEDA drives a Deployment from ebbflow's decisions.

A cluster that already runs KEDA points a ScaledObject's `external` trigger
at the scheduler's gRPC address with `model: <name>` in its metadata
(deploy/kubernetes/keda/scaledobject.yaml). The metric is the model's desired
replicas as the scheduler decides them (forecast-led, SLO-sized, with its
scale-down delay and scale to zero), with a target of 1 per replica, so the
HPA KEDA creates (an AverageValue target: ceil(value / target)) asks for
exactly that count; `IsActive` is "desired > 0", which KEDA uses to scale
between 0 and 1. Then ebbflow's actuator is not run for that model: KEDA, the
HPA and the Deployment carry the decision out.

What "desired" is: the latest evaluation of this scheduler while it leads
(holds included: a hold keeps the current count), else the leader's desired
state in KV (a standby answers as well as the leader). A model the scheduler
knows nothing of is NOT_FOUND; a trigger without `model` is INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Protocol

import grpc
from google.protobuf.message import DecodeError
from nats.js.errors import KeyNotFoundError

from ebbflow.keda import externalscaler_pb2, externalscaler_pb2_grpc
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.registry import RegistryView
from ebbflow.v1 import scheduling_pb2

log = logging.getLogger(__name__)

STREAM_CHECK_S = 0.5
"""How often a StreamIsActive stream looks at the decision (it sends only a change)."""
TARGET_PER_REPLICA = 1.0


class Decides(Protocol):
    evaluations: dict[str, scheduling_pb2.ScalingDecision]

    def leads(self) -> bool: ...


def metric_name(model: str) -> str:
    return f"ebbflow-{model}-desired-replicas"


class KedaScaler(externalscaler_pb2_grpc.ExternalScalerServicer):
    def __init__(self, bus: Bus, view: RegistryView, scheduler: Decides, stop: asyncio.Event | None = None) -> None:
        self.bus = bus
        self.view = view
        self.scheduler = scheduler
        self.stop = stop or asyncio.Event()
        """Set when the service stops: open streams end so the server's grace is not spent on them."""

    async def desired(self, model: str) -> int | None:
        """The model's desired replicas as the scheduler decides them; None when nothing is known of it."""
        evaluation = self.scheduler.evaluations.get(model)
        if evaluation is not None and self.scheduler.leads():
            return evaluation.desired.horizontal.replicas
        try:
            entry = await self.bus.desired.get(model)
        except KeyNotFoundError:
            return 0 if model in self.view.policies else None
        try:
            return scheduling_pb2.DesiredState.FromString(entry.value or b"").horizontal.replicas
        except DecodeError:
            return None

    async def _model(self, ref: externalscaler_pb2.ScaledObjectRef, context: grpc.aio.ServicerContext) -> str:
        model = ref.scalerMetadata.get("model", "").strip()
        if not model:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"ScaledObject {ref.namespace}/{ref.name}: the trigger's metadata needs `model: <model name>`"
            )
        return model

    async def _replicas(self, model: str, context: grpc.aio.ServicerContext) -> int:
        try:
            replicas = await self.desired(model)
        except Exception as error:  # NATS away and no evaluation of our own: KEDA keeps its last value and retries
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the desired replicas of {model!r} cannot be read now: {error}")
        if replicas is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {model!r}: no policy and no decision for it")
        return replicas

    async def IsActive(self, request: externalscaler_pb2.ScaledObjectRef, context: grpc.aio.ServicerContext) -> externalscaler_pb2.IsActiveResponse:
        model = await self._model(request, context)
        return externalscaler_pb2.IsActiveResponse(result=await self._replicas(model, context) > 0)

    async def StreamIsActive(
        self, request: externalscaler_pb2.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[externalscaler_pb2.IsActiveResponse]:
        model = await self._model(request, context)
        sent: bool | None = None
        while not self.stop.is_set():
            try:
                active = (await self.desired(model) or 0) > 0
            except Exception as error:  # NATS away: say nothing new until it can be read
                log.debug("StreamIsActive %s: %s", model, error)
                active = sent
            if active is not None and active != sent:
                yield externalscaler_pb2.IsActiveResponse(result=active)
                sent = active
            await wait_any(STREAM_CHECK_S, self.stop)

    async def GetMetricSpec(self, request: externalscaler_pb2.ScaledObjectRef, context: grpc.aio.ServicerContext) -> externalscaler_pb2.GetMetricSpecResponse:
        model = await self._model(request, context)
        await self._replicas(model, context)  # an unknown model is refused here, when the ScaledObject is created
        spec = externalscaler_pb2.MetricSpec(metricName=metric_name(model), targetSize=int(TARGET_PER_REPLICA), targetSizeFloat=TARGET_PER_REPLICA)
        return externalscaler_pb2.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(self, request: externalscaler_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext) -> externalscaler_pb2.GetMetricsResponse:
        model = await self._model(request.scaledObjectRef, context)
        replicas = await self._replicas(model, context)
        value = externalscaler_pb2.MetricValue(metricName=request.metricName or metric_name(model), metricValue=replicas, metricValueFloat=float(replicas))
        return externalscaler_pb2.GetMetricsResponse(metricValues=[value])
