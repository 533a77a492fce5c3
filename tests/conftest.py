"""Shared fixtures: one real nats-server per session, stacks of real services and tritonservers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_asyncio

from ebbflow.demo import llm_inputs  # noqa: F401 - shared with the tests
from ebbflow.emulator.tokens import expected_text as expected_output  # noqa: F401
from ebbflow.runtime.nats_server import start_nats_server


@pytest_asyncio.fixture(scope="session")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    child, url = await start_nats_server(tmp_path_factory.mktemp("nats"))
    yield url
    await child.stop(5.0)


async def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    """Poll an event-like condition (no fixed sleeps as a substitute for readiness)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(poll_s)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
