"""Integration stacks: real nats-server, real tritonserver replicas, the real services in-process."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_asyncio
from nats.js.errors import NotFoundError

import nats
from ebbflow.runtime import subjects
from ebbflow.runtime.config import ActuatorConfig, Config, ModelPolicy, RouterConfig
from ebbflow.stack import Stack

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
    for stream in (subjects.DECISIONS_STREAM, subjects.LIFECYCLE_STREAM):
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
