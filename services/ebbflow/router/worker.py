"""Running the router: in the control-plane process, or as worker processes sharing one port.

`RouterService` is the router with its server and loops. With `router.workers`
above 1, `RouterWorkers` starts that many `python -m ebbflow.router.worker`
processes bound to the same port with SO_REUSEPORT (the kernel spreads
connections over them). Each worker keeps its own registry view and publishes
its own telemetry under its own router id, which the collector merges; their
Prometheus metrics are merged through prometheus_client's multiprocess
directory, served by the parent's /metrics.

Stopping drains by default, within `router.drain_timeout_s`: the gRPC server
refuses new calls and lets those in flight finish, and requests held for a
model with no ready replica are answered UNAVAILABLE (retry) before the grace
ends. `stop_router` stops a router and its HAProxy front in the order that
loses no call in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, AsyncIterator, Protocol

from opentelemetry import trace
from prometheus_client import CollectorRegistry, multiprocess

from ebbflow.router.core import SERVICE
from ebbflow.router.rest import RestRouter
from ebbflow.router.server import Router
from ebbflow.router.telemetry import RouterMetrics
from ebbflow.runtime import subjects, tracing
from ebbflow.runtime.bus import Bus, connect, unsubscribe
from ebbflow.runtime.config import RouterConfig, router_config
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.grpc_server import GrpcServer
from ebbflow.runtime.process import ChildProcess, spawn, venv_environment
from ebbflow.runtime.tls import server_tls
from ebbflow.runtime.registry import RegistryView, following
from ebbflow.v1 import load_pb2

log = logging.getLogger(__name__)

HOLD_ANSWER_MARGIN_S = 1.5
"""Held requests are answered this long before a stop's grace ends (half the grace when it is shorter): the
answer must still cross the front, whose client connections then close within a second (`timeout client-fin`,
router.haproxy), before either cuts anything."""
WORKER_EXIT_S = 5.0
"""Past router.drain_timeout_s, how long a worker may take to close NATS and exit before it is killed."""


class RouterService:
    """One router: the Triton-protocol server, its registry follower, telemetry and load subscription."""

    def __init__(self, config: RouterConfig, bus: Bus, view: RegistryView, registry: CollectorRegistry | None, share_port: bool = False) -> None:
        tracer = trace.get_tracer("ebbflow.router") if config.tracing else None
        self.router = Router(config, bus, view, RouterMetrics(registry), tracer)
        self.server = GrpcServer([SERVICE], config.max_message_bytes, share_port=share_port)
        self.server.server.add_generic_rpc_handlers((self.router.handler(),))
        self.rest = RestRouter(self.router) if config.http_port >= 0 else None
        self.http_port: int | None = None
        """Where the KServe v2 HTTP API listens once started (None: router.http_port is -1)."""
        self.share_port = share_port
        self.config = config
        self.bus = bus
        self._stop = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._subscription: Any = None

    async def start(self) -> int:
        """Bind, start serving and following the registry; return the port."""
        tls = server_tls(self.config.tls_cert_file, self.config.tls_key_file, self.config.tls_client_ca_file)
        port = self.server.bind(self.config.host, self.config.port, tls)
        self.router.sync()
        self._tasks = [
            asyncio.create_task(self.router.follow(self._stop), name="router follower"),
            asyncio.create_task(self.router.telemetry.publish(self._stop), name="router telemetry"),
        ]

        async def on_load(message: Any) -> None:
            try:
                self.router.on_load(load_pb2.LoadSnapshot.FromString(message.data))
            except Exception as error:  # a bad snapshot only loses a tie-breaker
                log.debug("ignoring a load snapshot: %s", error)

        self._subscription = await self.bus.nc.subscribe(f"{subjects.LOAD}.*", cb=on_load)
        await self.server.start()
        if self.rest is not None:
            self.http_port = await self.rest.start(self.config.host, self.config.http_port, self.share_port, tls.ssl_context() if tls else None)
        return port

    def answer_holds_by(self, deadline_s: float) -> None:
        """Held requests still without a replica at `deadline_s` (time.monotonic) get UNAVAILABLE then: what
        a stop does first, so held answers reach clients before the grace (and a front's drain) ends."""
        self.router.holds.answer_by(deadline_s - min(HOLD_ANSWER_MARGIN_S, max(0.0, deadline_s - time.monotonic()) / 2))

    async def stop(self, drain: bool = True, grace_s: float | None = None) -> None:
        """Stop serving. drain: refuse new calls and give those in flight `grace_s` (default
        router.drain_timeout_s) to finish, held ones answered before it ends; else cancel them at once.

        The registry follower runs until the server has stopped, so a replica that becomes ready during the
        grace still takes the held requests."""
        if self._stopping:
            return
        self._stopping = True
        grace = (self.config.drain_timeout_s if grace_s is None else grace_s) if drain else 0.0
        self.answer_holds_by(time.monotonic() + grace)
        stopping = [self.server.stop(grace)]
        if self.rest is not None:
            stopping.append(self.rest.stop(grace))
        await asyncio.gather(*stopping)
        self._stop.set()
        await unsubscribe(self._subscription)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.router.close()


class RouterWorkers:
    """`count` router processes sharing host:port, started and stopped together."""

    def __init__(self, config: RouterConfig, nats_url: str, state_dir: Path, metrics_dir: Path) -> None:
        self.config = config
        self.nats_url = nats_url
        self.state_dir = state_dir
        self.metrics_dir = metrics_dir
        self.children: list[ChildProcess] = []

    async def start(self, timeout_s: float = 30.0) -> None:
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        ready_dir = self.state_dir / "router-ready"
        shutil.rmtree(ready_dir, ignore_errors=True)
        ready_dir.mkdir(parents=True)
        env = venv_environment()
        env.update(
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir),
            EBBFLOW_NATS_URL=self.nats_url,
            EBBFLOW_ROUTER_CONFIG=json.dumps(asdict(self.config)),
        )
        for index in range(self.config.workers):
            env["EBBFLOW_READY_FILE"] = str(ready_dir / f"worker-{index}")
            argv = [sys.executable, "-m", "ebbflow.router.worker"]
            self.children.append(await spawn(f"router worker {index}", argv, self.state_dir / "logs" / f"router-{index}.log", env))
        deadline = time.monotonic() + timeout_s
        while len(list(ready_dir.iterdir())) < len(self.children):
            dead = [c for c in self.children if not c.running]
            if dead:
                raise UnavailableError(f"{dead[0].name} exited with code {dead[0].process.returncode}:\n{dead[0].tail()}")
            if time.monotonic() > deadline:
                raise UnavailableError(f"router workers not serving after {timeout_s:.0f} s; see {self.state_dir / 'logs'}")
            await asyncio.sleep(0.05)

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    async def stop(self, drain: bool = True) -> None:
        """SIGTERM to every worker: each drains as RouterService.stop does (drain) and is killed if it has not
        exited a few seconds after router.drain_timeout_s; without drain, SIGKILL at once."""
        if drain:
            timeout_s = self.config.drain_timeout_s + WORKER_EXIT_S
            await asyncio.gather(*(c.stop(timeout_s) for c in self.children), return_exceptions=True)
        else:
            await asyncio.gather(*(c.stop(5.0, signal.SIGKILL) for c in self.children), return_exceptions=True)
        for child in self.children:
            multiprocess.mark_process_dead(child.pid, str(self.metrics_dir))  # their live gauges stop counting


class Front(Protocol):
    """What stop_router needs of the router's front (router.front.HaproxyFront)."""

    config: RouterConfig

    async def stop(self, drain: bool = True) -> None: ...


async def stop_router(front: Front | None, service: RouterService | None, workers: RouterWorkers | None = None, drain: bool = True) -> None:
    """Stop a router's port: its HAProxy front, and the Python router behind it in this process (`service`) or
    in worker processes; with drain, within router.drain_timeout_s and without failing a call in flight.

    The front goes first and the Python router keeps serving while it drains, since calls in flight at the
    front may be waiting on it (held at zero replicas, metadata, streams); the held ones are answered before
    the bound, so the front's drain does not run into it. Worker processes cannot be told the bound from
    here: they get SIGTERM with the front and drain on their own (a call the front hands them in the
    moment before its listener closes is refused)."""
    configs = [part.config for part in (front, service, workers) if part is not None]
    if not configs:
        return
    deadline = time.monotonic() + (configs[0].drain_timeout_s if drain else 0.0)
    if service is not None:
        service.answer_holds_by(deadline)
    stopping = [front.stop(drain)] if front is not None else []
    if workers is not None:
        stopping.append(workers.stop(drain))
    await asyncio.gather(*stopping)
    if service is not None:
        await service.stop(drain, grace_s=max(0.0, deadline - time.monotonic()))


@asynccontextmanager
async def child_process(name: str) -> AsyncIterator[tuple[RouterConfig, Bus, RegistryView, asyncio.Event]]:
    """How a router child process (a worker, or the HAProxy front) starts: its config and NATS URL from the
    environment, a loaded registry view, and a stop event that SIGTERM or SIGINT sets. On exit the view stops
    and NATS closes."""
    config = router_config(json.loads(os.environ["EBBFLOW_ROUTER_CONFIG"]))
    bus = await connect(os.environ["EBBFLOW_NATS_URL"], name=f"{name}-{os.getpid()}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with following(bus) as view:
            yield config, bus, view, stop
    finally:
        await bus.close()


async def _run_worker() -> None:
    async with child_process("ebbflow-router") as (config, bus, view, stop):
        service = RouterService(config, bus, view, CollectorRegistry(), share_port=True)
        await service.start()
        Path(os.environ["EBBFLOW_READY_FILE"]).touch()
        await stop.wait()
        await service.stop()


if __name__ == "__main__":
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tracing.setup("router")
    uvloop.run(_run_worker())  # libuv's loop: measurably less CPU per proxied request (benchmarks/router_overhead.py)
