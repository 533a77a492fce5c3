"""Shared fixtures: one real nats-server per session, stacks of real services and tritonservers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
from tritonclient.grpc import InferInput

from ebbflow.runtime.nats_server import start_nats_server


def llm_inputs(prompt: str, max_tokens: int) -> list[InferInput]:
    text = InferInput("text_input", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
    tokens = InferInput("max_tokens", [1, 1], "INT32")
    tokens.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
    return [text, tokens]


def expected_output(prompt: str, max_tokens: int) -> str:
    words = prompt.split()
    return " ".join(words[i % len(words)] for i in range(max_tokens))


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
