"""Integration stacks: real nats-server, real tritonserver replicas, the real services in-process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_asyncio
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

import nats
from ebbflow.actuator.static import StaticReplicas
from ebbflow.router.worker import RouterService
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus, connect
from ebbflow.runtime.config import ActuatorConfig, Config, ModelPolicy, RouterConfig
from ebbflow.runtime.registry import RegistryView
from ebbflow.scheduler.service import policy_to_proto
from ebbflow.stack import Stack
from tests.conftest import wait_for

TIME_SCALE = 0.05  # a 40-token llm answer takes ~26 ms

pytestmark = pytest.mark.integration


async def reset_jetstream(url: str) -> None:
    """Every test starts from empty buckets and streams on the shared nats-server."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for bucket in (subjects.REPLICAS_BUCKET, subjects.DESIRED_BUCKET, subjects.POLICIES_BUCKET, subjects.MODELS_BUCKET):
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


def stack_config(policy: ModelPolicy) -> Config:
    return replace(
        Config(),
        router=RouterConfig(port=0, hold_timeout_s=20.0),
        actuator=ActuatorConfig(time_scale=0.02, drain_propagation_s=0.3, exit_timeout_s=3),
        models=(policy,),
    )


@pytest_asyncio.fixture
async def make_stack(nats_url: str, tmp_path: Path) -> AsyncIterator:
    stacks: list[Stack] = []

    async def make(policy: ModelPolicy) -> Stack:
        await reset_jetstream(nats_url)
        stack = Stack(stack_config(policy), nats_url, tmp_path / f"state{len(stacks)}")
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

    async def policy(self, model: str, **fields: object) -> None:
        await self.bus.policies.put(model, policy_to_proto(ModelPolicy(model=model, **fields).validate()).SerializeToString())  # type: ignore[arg-type]
        await wait_for(lambda: model in self.view.policies, 5, f"policy of {model} in the view")

    async def router(self, **settings_: object) -> str:
        config = replace(RouterConfig(port=0, hold_timeout_s=20.0), **settings_)  # type: ignore[arg-type]
        self.registries.append(CollectorRegistry())
        service = RouterService(config, self.bus, self.view, self.registries[-1])
        self.routers.append(service)
        port = await service.start()
        return f"127.0.0.1:{port}"

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the newest router's metrics."""
        return self.registries[-1].get_sample_value(name, labels) or 0.0

    async def wait_routable(self, model: str, count: int) -> None:
        await wait_for(lambda: all(len(r.router._ready.get(model, ())) == count for r in self.routers), 10, f"{count} routable {model}")


@pytest_asyncio.fixture
async def testbed(nats_url: str, tmp_path: Path) -> AsyncIterator[RouterBed]:
    await reset_jetstream(nats_url)
    bus = await connect(nats_url, name="router-test")
    stop = asyncio.Event()
    view = RegistryView()
    watcher = asyncio.create_task(view.run(bus, stop))
    await view.wait_loaded(10)
    replicas = StaticReplicas(bus, tmp_path / "state", TIME_SCALE)
    await replicas.publish_model_configs()
    await wait_for(lambda: "llm_stream" in view.model_configs, 5, "model configs in the view")
    bed = RouterBed(bus, view, replicas, [], [])
    yield bed
    for service in bed.routers:
        await service.stop(grace_s=0.5)
    await replicas.stop()
    stop.set()
    await asyncio.gather(watcher, return_exceptions=True)
    await bus.close()
