"""Shared fixtures: one real nats-server per session, stacks of real services and tritonservers."""

from __future__ import annotations

import asyncio
import os
import signal
import warnings
from pathlib import Path
from typing import AsyncIterator, Iterator

import psutil
import pytest
import pytest_asyncio

from ebbflow.demo import llm_inputs  # noqa: F401 - shared with the tests
from ebbflow.emulator.tokens import expected_text as expected_output  # noqa: F401
from ebbflow.runtime.nats_server import start_nats_server


@pytest.fixture(scope="session", autouse=True)
def no_replica_outlives_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Replicas are detached on purpose (they outlive the actuator that started them): one a failed test did not
    stop must not keep running after the session. Killed by its marker naming a state directory under this
    session's temporary root, and named in a warning (a test leaked it)."""
    yield
    from ebbflow.actuator.leftovers import OWNER_ENV

    root = str(tmp_path_factory.getbasetemp().resolve()) + os.sep
    leaked = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(OWNER_ENV, "").startswith(root):
                leaked.append(f"{process.pid} {process.name()}")
                process.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue
    if leaked:
        warnings.warn(f"replica processes outlived their tests and were killed: {leaked}")


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
