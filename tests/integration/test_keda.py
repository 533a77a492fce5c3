"""KEDA's external scaler protocol, served by a real scheduler on a real nats-server and called by a client generated
from the proto, as KEDA calls it: the metric spec, values that follow the decisions, and StreamIsActive pushes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from ebbflow.keda import externalscaler_pb2, externalscaler_pb2_grpc
from ebbflow.policy import ModelPolicy
from ebbflow.runtime import subjects
from ebbflow.runtime.config import SchedulerConfig
from ebbflow.scheduler.keda import KedaScaler, metric_name
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
from ebbflow.v1 import load_pb2
from tests.conftest import wait_for
from tests.integration.conftest import SchedulerBed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CONFIG = SchedulerConfig(interval_s=0.2, load_window_s=1.0)
POLICY = ModelPolicy(
    model="llm", min_replicas=0, max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=2, forecast_quantile=0, scale_tolerance=0
)
REF = externalscaler_pb2.ScaledObjectRef(name="triton-llm", namespace="serving", scalerMetadata={"model": "llm"})


def snapshot(in_flight: float, arrival_rps: float) -> load_pb2.LoadSnapshot:
    return load_pb2.LoadSnapshot(model="llm", status=load_pb2.DATA_STATUS_FRESH, in_flight=in_flight, arrival_rps=arrival_rps, ready_replicas=1)


@contextlib.asynccontextmanager
async def keda_client(bed: SchedulerBed, scheduler: Scheduler, stop: asyncio.Event) -> AsyncIterator[externalscaler_pb2_grpc.ExternalScalerStub]:
    server = grpc.aio.server()
    externalscaler_pb2_grpc.add_ExternalScalerServicer_to_server(KedaScaler(bed.bus, bed.view, scheduler, stop), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield externalscaler_pb2_grpc.ExternalScalerStub(channel)
    finally:
        stop.set()
        await server.stop(1.0)


async def test_keda_gets_the_metric_spec_values_that_follow_the_decisions_and_activity_pushed(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    await bed.put_policies(POLICY)
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    load = {"in_flight": 10.0, "arrival_rps": 20.0}
    bed.feed(lambda: [snapshot(load["in_flight"], load["arrival_rps"])])
    scheduler = Scheduler(CONFIG, bed.bus, bed.view, SchedulerMetrics(CollectorRegistry()), instance_id="keda")
    bed.run(scheduler)
    async with keda_client(bed, scheduler, asyncio.Event()) as keda:
        spec = await keda.GetMetricSpec(REF)
        assert [(s.metricName, s.targetSizeFloat) for s in spec.metricSpecs] == [(metric_name("llm"), 1.0)]

        async def value() -> float:
            reply = await keda.GetMetrics(externalscaler_pb2.GetMetricsRequest(scaledObjectRef=REF, metricName=metric_name("llm")))
            (metric,) = reply.metricValues
            assert metric.metricName == metric_name("llm") and metric.metricValue == int(metric.metricValueFloat)
            return metric.metricValueFloat

        stream = keda.StreamIsActive(REF)
        pushed: list[bool] = []

        async def follow() -> None:
            async for reply in stream:
                pushed.append(reply.result)

        following = asyncio.create_task(follow())

        # 10 in flight at 4 per replica: the scheduler decides 3, and KEDA reads 3 (its HPA: ceil(3 / 1) = 3 pods).
        await wait_for(lambda: decisions and decisions[-1].desired.horizontal.replicas == 3, 10, "10 in flight -> 3 replicas")
        assert await value() == 3.0 and (await keda.IsActive(REF)).result
        await wait_for(lambda: pushed and pushed[-1], 5, "StreamIsActive says active")

        # Twice the load: the value follows the next decision.
        load["in_flight"] = 20.0
        await wait_for(lambda: decisions[-1].desired.horizontal.replicas == 5, 10, "20 in flight -> 5 replicas")
        assert await value() == 5.0

        # Silence: past the scale-down delay the model goes to zero, the value is 0, and the stream pushes inactive.
        load.update(in_flight=0.0, arrival_rps=0.0)
        await wait_for(lambda: decisions[-1].desired.horizontal.replicas == 0, 30, "idle -> 0 replicas")
        assert await value() == 0.0 and not (await keda.IsActive(REF)).result
        await wait_for(lambda: not pushed[-1], 5, "StreamIsActive says inactive")
        assert all(a != b for a, b in zip(pushed, pushed[1:])), f"a push without a change: {pushed}"
        assert pushed[-2:] == [True, False], pushed
        stream.cancel()
        await asyncio.gather(following, return_exceptions=True)


async def test_keda_asking_for_no_model_or_an_unknown_one_gets_a_clear_error(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    await bed.put_policies(POLICY)
    scheduler = Scheduler(CONFIG, bed.bus, bed.view, SchedulerMetrics(CollectorRegistry()), instance_id="keda")
    async with keda_client(bed, scheduler, asyncio.Event()) as keda:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await keda.GetMetricSpec(externalscaler_pb2.ScaledObjectRef(name="triton-llm", namespace="serving"))
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model" in missing.value.details()
        unknown = externalscaler_pb2.ScaledObjectRef(name="x", namespace="serving", scalerMetadata={"model": "nope"})
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await keda.GetMetrics(externalscaler_pb2.GetMetricsRequest(scaledObjectRef=unknown, metricName="m"))
        assert not_found.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in not_found.value.details()
        # A known model nothing was decided for yet is inactive at 0, not an error.
        assert not (await keda.IsActive(REF)).result
