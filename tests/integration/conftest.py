"""Integration stacks: real nats-server, real tritonserver replicas, the real services in-process."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import AsyncIterator, Callable, Iterable

import grpc
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as triton_aio
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

import nats
from ebbflow.actuator.static import StaticReplicas
from ebbflow.collector.api import CollectorApi
from ebbflow.collector.service import Collector, CollectorMetrics
from ebbflow.policy import ModelPolicy, policy_to_proto
from ebbflow.runtime.grpc_server import GrpcServer
from ebbflow.v1 import collector_pb2, collector_pb2_grpc, load_pb2, scheduling_pb2, scheduling_pb2_grpc
from ebbflow.router.front import HaproxyFront, stop_leftover_front
from ebbflow.router.worker import RouterService
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import ActuatorConfig, CollectorConfig, Config, PlacementConfig, RouterConfig
from ebbflow.runtime.registry import RegistryView, connected
from ebbflow.scheduler.api import SchedulerApi
from ebbflow.scheduler.service import Scheduler
from ebbflow.stack import Stack
from tests.conftest import llm_inputs, wait_for

TIME_SCALE = 0.05  # a 40-token llm answer takes ~26 ms
CONFIG = CollectorConfig(interval_s=0.5, scrape_timeout_s=0.3, stale_after_s=1.5, windows_s=(4.0, 30.0), history_flush_s=1.0)

pytestmark = pytest.mark.integration


async def reset_jetstream(url: str) -> None:
    """Every test starts from empty buckets and streams on the shared nats-server."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for bucket in (subjects.REPLICAS_BUCKET, subjects.DESIRED_BUCKET, subjects.POLICIES_BUCKET, subjects.MODELS_BUCKET, subjects.LEASES_BUCKET, subjects.TENANTS_BUCKET):
        try:
            await js.delete_key_value(bucket)
        except NotFoundError:
            pass
    for stream in (subjects.DECISIONS_STREAM, subjects.LIFECYCLE_STREAM, subjects.HISTORY_FINE_STREAM, subjects.HISTORY_COARSE_STREAM):
        try:
            await js.delete_stream(stream)
        except NotFoundError:
            pass
    await nc.close()


def stack_config(policy: ModelPolicy, placement: PlacementConfig = PlacementConfig()) -> Config:
    return replace(
        Config(),
        router=RouterConfig(port=0, http_port=0, hold_timeout_s=20.0),
        actuator=ActuatorConfig(time_scale=0.02, drain_propagation_s=0.3, exit_timeout_s=3),
        placement=placement,
        models=(policy,),
    )


@pytest_asyncio.fixture
async def make_stack(nats_url: str, tmp_path: Path) -> AsyncIterator:
    stacks: list[Stack] = []

    async def make(policy: ModelPolicy, placement: PlacementConfig = PlacementConfig()) -> Stack:
        await reset_jetstream(nats_url)
        stack = Stack(stack_config(policy, placement), nats_url, tmp_path / f"state{len(stacks)}")
        stacks.append(stack)
        await stack.start()
        await stack.wait_serving([policy.model], timeout_s=60)
        return stack

    yield make
    for stack in stacks:
        await stack.stop()


@dataclass
class RouterBed:
    bus: Bus
    view: RegistryView
    replicas: StaticReplicas
    routers: list[RouterService]
    registries: list[CollectorRegistry]
    state_dir: Path
    fronts: list[HaproxyFront] = field(default_factory=list)
    http_address: str = ""
    """host:port of the newest router's KServe v2 HTTP API (its front's, when it has one)."""
    tasks: list[asyncio.Task] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def policy(self, model: str, **fields: object) -> None:
        await self.bus.policies.put(model, policy_to_proto(ModelPolicy(model=model, **fields).validate()).SerializeToString())  # type: ignore[arg-type]
        await wait_for(lambda: model in self.view.policies, 5, f"policy of {model} in the view")

    async def router(self, front: bool = False, **settings_: object) -> str:
        """A router's address: the Python router's, or with `front` the HAProxy front's before it."""
        # A short drain: a test that ends with a connection in an odd state would otherwise wait the default 10 s
        config = replace(RouterConfig(port=0, http_port=0, hold_timeout_s=20.0, drain_timeout_s=3.0), **settings_)  # type: ignore[arg-type]
        self.registries.append(CollectorRegistry())
        internal = replace(config, tls_cert_file="", tls_key_file="", tls_client_ca_file="") if front else config  # the front ends TLS
        service = RouterService(internal, self.bus, self.view, self.registries[-1])
        self.routers.append(service)
        port = await service.start()
        self.http_address = f"127.0.0.1:{service.http_port}"
        if not front:
            return f"127.0.0.1:{port}"
        haproxy = HaproxyFront(
            config, self.bus, self.view, f"127.0.0.1:{port}", self.state_dir / f"front{len(self.fronts)}", service.router.metrics,
            http_fallback=self.http_address,
        )
        self.fronts.append(haproxy)
        front_port = await haproxy.start()
        self.http_address = haproxy.http_listen
        self.tasks.append(asyncio.create_task(haproxy.run(self.stop)))
        return f"127.0.0.1:{front_port}"

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the newest router's metrics."""
        return self.registries[-1].get_sample_value(name, labels) or 0.0

    async def wait_routable(self, model: str, count: int) -> None:
        await wait_for(lambda: all(len(r.router.upstreams.ready.get(model, ())) == count for r in self.routers), 10, f"{count} routable {model}")


@pytest_asyncio.fixture
async def testbed(nats_url: str, tmp_path: Path) -> AsyncIterator[RouterBed]:
    await reset_jetstream(nats_url)
    async with connected(nats_url, "router-test", 10) as (bus, view):
        replicas = StaticReplicas(bus, tmp_path / "state", TIME_SCALE)
        await replicas.publish_model_configs()
        await wait_for(lambda: "llm_stream" in view.model_configs, 5, "model configs in the view")
        bed = RouterBed(bus, view, replicas, [], [], tmp_path)
        yield bed
        bed.stop.set()
        await asyncio.gather(*bed.tasks, return_exceptions=True)
        for haproxy in bed.fronts:
            await haproxy.stop()
        for haproxy_dir in tmp_path.glob("*/haproxy"):  # HAProxy outlives its shell: what a test left running, too
            stop_leftover_front(haproxy_dir.parent, drain_timeout_s=1.0)
        for service in bed.routers:
            await service.stop(grace_s=0.5)
        await replicas.stop()


class RunningCollector:
    """A collector task with its gRPC API on a free port."""

    def __init__(self, bed: RouterBed, config: CollectorConfig) -> None:
        self.registry = CollectorRegistry()
        self.collector = Collector(config, bed.bus, bed.view, CollectorMetrics(self.registry))
        self.stop = asyncio.Event()
        self.server = GrpcServer([collector_pb2.DESCRIPTOR.services_by_name["CollectorService"].full_name])
        collector_pb2_grpc.add_CollectorServiceServicer_to_server(CollectorApi(self.collector), self.server.server)

    async def start(self) -> collector_pb2_grpc.CollectorServiceStub:
        self.task = asyncio.create_task(self.collector.run(self.stop))
        self.port = port = self.server.bind("127.0.0.1", 0)
        await self.server.start()
        await asyncio.wait_for(self.collector.restored.wait(), 30)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return collector_pb2_grpc.CollectorServiceStub(self.channel)

    async def close(self) -> None:
        self.stop.set()
        await self.task
        await self.channel.close()
        await self.server.stop(grace_s=0.2)


@pytest_asyncio.fixture
async def collectors(testbed: RouterBed) -> AsyncIterator:
    running: list[RunningCollector] = []

    async def make(config: CollectorConfig = CONFIG) -> tuple[RunningCollector, collector_pb2_grpc.CollectorServiceStub]:
        collector = RunningCollector(testbed, config)
        running.append(collector)
        return collector, await collector.start()

    yield make
    for collector in running:
        if not collector.stop.is_set():
            await collector.close()


async def open_loop(address: str, rate_rps: float, duration_s: float, max_tokens: int = 8) -> tuple[float, list[str]]:
    """Requests at a fixed schedule (not sleep-drift), all awaited; returns (achieved send rate, errors)."""
    client = triton_aio.InferenceServerClient(address)
    errors: list[str] = []

    async def one() -> None:
        try:
            await client.infer("llm", llm_inputs("alpha beta gamma", max_tokens))
        except Exception as error:
            errors.append(str(error))

    loop = asyncio.get_running_loop()
    start, tasks = loop.time(), []
    while loop.time() - start < duration_s:
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(max(0.0, start + len(tasks) / rate_rps - loop.time()))
    sent_rate = len(tasks) / (loop.time() - start)
    await asyncio.gather(*tasks)
    await client.close()
    return sent_rate, errors


class SchedulerBed:
    """A real NATS with the registry view loaded, for schedulers run in the test: policies in, snapshots fed,
    decisions collected; everything started here is stopped by the fixture."""

    def __init__(self, bus: Bus, view: RegistryView) -> None:
        self.bus, self.view = bus, view
        self._stops: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task] = []
        self._subscriptions: list = []

    async def put_policies(self, *policies: ModelPolicy) -> None:
        for policy in policies:
            await self.bus.policies.put(policy.model, policy_to_proto(policy).SerializeToString())
        await wait_for(lambda: {p.model for p in policies} <= set(self.view.policies), 5, "the policies in the view")

    async def decisions(self, subject: str) -> list[scheduling_pb2.ScalingDecision]:
        """Every decision published on `subject` from now on, appended as it arrives."""
        found: list[scheduling_pb2.ScalingDecision] = []

        async def on_decision(msg) -> None:  # type: ignore[no-untyped-def]
            found.append(scheduling_pb2.ScalingDecision.FromString(msg.data))

        self._subscriptions.append(await self.bus.nc.subscribe(subject, cb=on_decision))
        return found

    def feed(self, snapshots: Callable[[], Iterable[load_pb2.LoadSnapshot]], every_s: float = 0.2) -> None:
        """Publish what `snapshots()` returns every `every_s`, as the collector would."""
        stop = asyncio.Event()

        async def collector() -> None:
            while not stop.is_set():
                for snapshot in snapshots():
                    await self.bus.nc.publish(subjects.load_subject(snapshot.model), snapshot.SerializeToString())
                await asyncio.sleep(every_s)

        self._stops.append(stop)
        self._tasks.append(asyncio.create_task(collector()))

    @contextlib.asynccontextmanager
    async def api(self, scheduler: Scheduler) -> AsyncIterator[scheduling_pb2_grpc.SchedulerServiceStub]:
        """The scheduler's gRPC API (what `ebbflow decisions`, `plan` and `explain` ask) on a free port."""
        server = grpc.aio.server()
        scheduling_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerApi(self.bus, self.view, scheduler), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield scheduling_pb2_grpc.SchedulerServiceStub(channel)
        finally:
            await server.stop(None)

    async def explain(self, scheduler: Scheduler, model: str, generation: int) -> scheduling_pb2.ExplainResponse:
        """What `ebbflow explain MODEL GENERATION` asks the scheduler's API."""
        async with self.api(scheduler) as stub:
            return await stub.Explain(scheduling_pb2.ExplainRequest(model=model, generation=generation), timeout=10.0)

    def run(self, scheduler: Scheduler) -> tuple[asyncio.Event, asyncio.Task]:
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop))
        self._stops.append(stop)
        self._tasks.append(task)
        return stop, task

    async def close(self) -> None:
        for stop in self._stops:
            stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for subscription in self._subscriptions:
            await subscription.unsubscribe()


@pytest_asyncio.fixture
async def scheduler_bed(nats_url: str) -> AsyncIterator[SchedulerBed]:
    await reset_jetstream(nats_url)
    async with connected(nats_url, "scheduler-test", 10) as (bus, view):
        bed = SchedulerBed(bus, view)
        yield bed
        await bed.close()
