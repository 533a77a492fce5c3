"""Two collectors share the models through a real nats-server: split, each published once, taken over when one goes.

Each collector runs as its own service would: its own NATS connection and
registry view, its announcement in the `services` bucket, its gRPC API.
The replicas are fake /metrics endpoints (the text recorded from the real
tritonserver, relabelled per model) registered READY in the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from nats.js.errors import NoKeysError
from prometheus_client import CollectorRegistry

from ebbflow.collector.api import CollectorApi
from ebbflow.collector.membership import MEMBER_LIVE_S, Membership
from ebbflow.collector.service import Collector, CollectorMetrics
from ebbflow.collector.shards import assign
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.discovery import Announcer
from ebbflow.runtime.grpc_server import GrpcServer
from ebbflow.runtime.registry import connected
from ebbflow.v1 import collector_pb2, collector_pb2_grpc, discovery_pb2, registry_pb2
from tests.conftest import wait_for
from tests.integration.conftest import CONFIG, reset_jetstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TEXT = (Path(__file__).resolve().parent.parent / "data" / "triton_metrics_llm.txt").read_bytes()
MODELS = [f"m{i}" for i in range(8)]
REPLICAS_PER_MODEL = 2


class Member:
    """One collector as `ebbflow serve collector` runs it, under a chosen instance id."""

    def __init__(self, nats_url: str, instance: str) -> None:
        self.nats_url, self.instance = nats_url, instance
        self.registry = CollectorRegistry()
        self.stop = asyncio.Event()
        self._exit = contextlib.AsyncExitStack()

    async def start(self) -> collector_pb2_grpc.CollectorServiceStub:
        bus, view = await self._exit.enter_async_context(connected(self.nats_url, f"collector-{self.instance}"))
        self.bus = bus
        self.collector = Collector(CONFIG, bus, view, CollectorMetrics(self.registry), Membership(self.instance))
        self.task = asyncio.create_task(self.collector.run(self.stop))
        await asyncio.wait_for(self.collector.restored.wait(), 30)
        self.server = GrpcServer([collector_pb2.DESCRIPTOR.services_by_name["CollectorService"].full_name])
        collector_pb2_grpc.add_CollectorServiceServicer_to_server(CollectorApi(self.collector), self.server.server)
        port = self.server.bind("127.0.0.1", 0)
        await self.server.start()
        announcement = discovery_pb2.ServiceInstance(service="collector", instance_id=self.instance, grpc_address=f"127.0.0.1:{port}")
        self.announcer = asyncio.create_task(Announcer(bus, announcement).run(self.stop))
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return collector_pb2_grpc.CollectorServiceStub(self.channel)

    def owned(self) -> set[str]:
        return set(self.collector.owned)

    async def stop_cleanly(self) -> None:
        """SIGTERM: the announcement is withdrawn, pending history written."""
        self.stop.set()
        await asyncio.gather(self.task, self.announcer)
        await self._close()

    async def kill(self) -> None:
        """As SIGKILL leaves it: no withdrawal, the announcement stays until the bucket's TTL."""
        for task in (self.announcer, self.task):
            task.cancel()
        await asyncio.gather(self.announcer, self.task, return_exceptions=True)
        self.stop.set()
        await self._close()

    async def _close(self) -> None:
        await self.channel.close()
        await self.server.stop(grace_s=0.2)
        await self._exit.aclose()


@contextlib.asynccontextmanager
async def metrics_endpoints(models: list[str]) -> AsyncIterator[dict[str, int]]:
    """A /metrics port per model, serving the recorded text with that model's name: model -> port."""
    model_of_port: dict[int, str] = {}

    async def metrics(request: web.Request) -> web.Response:
        model = model_of_port[request.transport.get_extra_info("sockname")[1]]  # type: ignore[union-attr]
        return web.Response(body=TEXT.replace(b'model="llm"', f'model="{model}"'.encode()), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        for model in models:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            model_of_port[site._server.sockets[0].getsockname()[1]] = model  # type: ignore[union-attr]
        yield {model: port for port, model in model_of_port.items()}
    finally:
        await runner.cleanup()


async def register(bus: Bus, ports: dict[str, int]) -> None:
    for model, port in ports.items():
        for index in range(REPLICAS_PER_MODEL):
            entry = registry_pb2.ReplicaEntry(
                model=model, replica_id=f"{model}-r{index}", host="127.0.0.1", grpc_port=1, http_port=1, metrics_port=port,
                state=registry_pb2.REPLICA_STATE_READY,
            )
            await bus.replicas.put(subjects.replica_key(model, entry.replica_id), entry.SerializeToString())


async def forget_collectors(bus: Bus) -> None:
    """Announcements left by earlier tests' collectors would count as members for a few seconds."""
    try:
        keys = await bus.services.keys()
    except NoKeysError:
        return
    for key in keys:
        if key.startswith("collector."):
            await bus.services.delete(key)


class Published:
    """Every snapshot on `ebbflow.load.>`, by model, with when it arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = defaultdict(list)

    async def on_load(self, msg) -> None:  # type: ignore[no-untyped-def]
        self.arrivals[msg.subject.rpartition(".")[2]].append(time.monotonic())

    def counts(self, start: float, end: float) -> dict[str, int]:
        return {model: sum(start <= t < end for t in self.arrivals.get(model, [])) for model in MODELS}


@pytest_asyncio.fixture
async def fleet(nats_url: str) -> AsyncIterator[tuple[Bus, Published]]:
    await reset_jetstream(nats_url)
    async with connected(nats_url, "shards-test") as (bus, view), metrics_endpoints(MODELS) as ports:
        await forget_collectors(bus)
        await register(bus, ports)
        await wait_for(lambda: len(view.replicas) == len(MODELS) * REPLICAS_PER_MODEL, 5, "the replicas in the registry")
        published = Published()
        subscription = await bus.nc.subscribe(f"{subjects.LOAD}.>", cb=published.on_load)
        yield bus, published
        await subscription.unsubscribe()


def split_as_assigned(*members: Member) -> bool:
    """Each member owns exactly the models rendezvous hashing gives it among these members."""
    owners = assign(MODELS, [m.instance for m in members])
    return all(m.owned() == {model for model, o in owners.items() if o == m.instance} for m in members)


async def test_two_collectors_split_the_models_and_take_over_from_one_that_goes(fleet: tuple[Bus, Published], nats_url: str) -> None:
    bus, published = fleet
    a, b, c = Member(nats_url, "shard-a"), Member(nats_url, "shard-b"), Member(nats_url, "shard-c")
    stub_a = await a.start()
    await b.start()
    try:
        # Split as rendezvous hashing says, each model owned by exactly one.
        await wait_for(lambda: split_as_assigned(a, b), 10, "the models split between the two collectors")
        assert a.owned() and b.owned() and not a.owned() & b.owned()
        of_b = b.owned()
        for member in (a, b):
            assert member.registry.get_sample_value("ebbflow_collector_owned_models") == len(member.owned())
            assert member.registry.get_sample_value("ebbflow_collector_members") == 2
            assert member.registry.get_sample_value("ebbflow_collector_owned_endpoints") == len(member.owned()) * REPLICAS_PER_MODEL
        # Only the owner exports a model's gauges, so a dashboard's sum counts it once.
        some_of_b = sorted(b.owned())[0]
        await wait_for(lambda: b.registry.get_sample_value("ebbflow_model_ready_replicas", {"model": some_of_b}) == REPLICAS_PER_MODEL, 5, "b's gauges")
        assert a.registry.get_sample_value("ebbflow_model_ready_replicas", {"model": some_of_b}) is None

        # Every model published once per interval: not by both, not by neither.
        window_s = 4.0
        start = time.monotonic()
        await asyncio.sleep(window_s)
        once = window_s / CONFIG.interval_s
        counts = published.counts(start, start + window_s)
        assert all(0.6 * once <= n <= 1.4 * once for n in counts.values()), counts
        assert split_as_assigned(a, b)

        # Any collector answers for any model: a's API on a model b scrapes, snapshot and history.
        snapshot = (await stub_a.GetSnapshot(collector_pb2.GetSnapshotRequest(model=some_of_b))).snapshots[0]
        assert snapshot.model == some_of_b and snapshot.ready_replicas == REPLICAS_PER_MODEL and time.time() - snapshot.time_unix_s < 2
        everything = await stub_a.GetSnapshot(collector_pb2.GetSnapshotRequest())
        assert {s.model for s in everything.snapshots} == set(MODELS)
        history = await stub_a.GetHistory(collector_pb2.GetHistoryRequest(model=some_of_b, start_unix_s=time.time() - 10, step_s=1.0))
        ready = dict((s.name, list(s.values)) for s in history.series)["ready_replicas"]
        assert sum(1 for v in ready if v == REPLICAS_PER_MODEL) >= 4

        # b stops cleanly (its announcement withdrawn): a takes b's models over within a couple of intervals.
        stopped = time.monotonic()
        await b.stop_cleanly()
        await wait_for(lambda: a.owned() == set(MODELS), 3, "a owning every model after b's clean stop")
        took_s = time.monotonic() - stopped
        assert a.registry.get_sample_value("ebbflow_collector_model_moves_total", {"direction": "taken"}) == len(of_b)
        stopped_wall = time.time()
        await asyncio.sleep(3.0)
        counts = published.counts(time.monotonic() - 2.0, time.monotonic())
        assert all(2 <= n <= 6 for n in counts.values()), counts
        # The new owner's history of a taken model goes on from what it heard before: no hole at the handover.
        handover = math.floor(stopped_wall)  # whole steps: a last step cut short by the range's end may hold no row
        request = collector_pb2.GetHistoryRequest(model=some_of_b, start_unix_s=handover - 3, end_unix_s=handover + 2, step_s=1.0)
        ready = dict((s.name, list(s.values)) for s in (await stub_a.GetHistory(request)).series)["ready_replicas"]
        assert ready and all(v == REPLICAS_PER_MODEL for v in ready), (ready, took_s)

        # A third collector joins, then dies without a word (SIGKILL): its models come back after MEMBER_LIVE_S.
        await c.start()
        await wait_for(lambda: split_as_assigned(a, c), 10, "the models split between a and c")
        assert c.owned()
        await c.kill()
        killed = time.monotonic()
        await wait_for(lambda: a.owned() == set(MODELS), MEMBER_LIVE_S + 3, "a owning every model after c was killed")
        assert time.monotonic() - killed >= MEMBER_LIVE_S - 2.5  # its last heartbeat was up to one beat before the kill
    finally:
        for member in (a, b, c):
            if hasattr(member, "task") and not member.stop.is_set():
                await member.stop_cleanly()
