"""The HAProxy front (router.haproxy): started, kept in step with the registry, and read for telemetry.

`HaproxyFront` runs one `haproxy` process (Debian's package) bound to the
router's public port. When the ready replicas or routing policies change, it
renders a new configuration and reloads seamlessly: a new process takes the
listening socket over (`-x`, `expose-fd listeners`) and tells the old one to
finish its calls and exit (`-sf`, bounded by HARD_STOP_S). A configuration
HAProxy refuses is logged and not retried until it changes (the running one
keeps serving); an HAProxy that dies is started again on the same port.

Telemetry: every STATS_POLL_S it reads `show stat` (calls sent to each
replica, calls in flight) and each finished call's log line arrives over UDP
(latency, outcome). It publishes RouterTelemetry under its own router id, so
the collector merges it with the Python routers' like any other router's,
and it acknowledges drains (docs/architecture.md "Drain"): a draining replica leaves
the configuration, and the front says it is idle there once no HAProxy
process that had it is left.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ebbflow.policy import routing_from_proto
from ebbflow.router.core import ModelMeter
from ebbflow.router.haproxy import FALLBACK, TOO_LARGE_LUA, FrontBackend, FrontServer, FrontSpec, ServerStats, backend_name, parse_log_line, parse_stats, render
from ebbflow.router.telemetry import RouterMetrics, model_telemetry
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.process import ChildProcess, free_port, spawn
from ebbflow.runtime.registry import RegistryView
from ebbflow.runtime.wire import DRAINING, READY, address
from ebbflow.v1 import load_pb2, registry_pb2

log = logging.getLogger(__name__)

STATS_POLL_S = 0.2
RESTART_BACKOFF_S = 2.0


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)


class _LogReceiver(asyncio.DatagramProtocol):
    def __init__(self, front: HaproxyFront) -> None:
        self.front = front

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.front.on_log(data.decode(errors="replace"))


@dataclass
class _Process:
    child: ChildProcess
    replicas: frozenset[str]  # replica keys in its configuration


@dataclass
class HaproxyFront:
    config: RouterConfig
    bus: Bus
    view: RegistryView
    fallback: str  # host:port of the Python router
    state_dir: Path
    metrics: RouterMetrics
    router_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-haproxy")
    reloads: int = 0

    def __post_init__(self) -> None:
        self.dir = (self.state_dir / "haproxy").resolve()
        self._current: _Process | None = None
        self._retiring: list[_Process] = []
        self._rendered = ""
        self._refused = ""  # a configuration HAProxy would not start on
        self._next_restart_s = 0.0
        self._backends: dict[str, str] = {}  # backend name → model
        self._stats: dict[tuple[str, str], ServerStats] = {}
        self._meters: dict[str, ModelMeter] = {}
        self._acked: dict[str, int] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._codes: dict[tuple[str, str], Any] = {}

    def _processes(self) -> list[_Process]:
        """The serving HAProxy and those replaced but still finishing calls."""
        return [*([self._current] if self._current else []), *self._retiring]

    @property
    def pids(self) -> list[int]:
        return [p.child.pid for p in self._processes() if p.child.running]

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> int:
        """Start HAProxy on the router's port (0 picks a free one); return the port."""
        binary = haproxy_binary()
        if binary is None:
            raise UnavailableError("router.front is haproxy but no haproxy binary was found (Debian: apt-get install haproxy)")
        self.binary = binary
        self.dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _LogReceiver(self), local_addr=("127.0.0.1", 0))
        log_port = self._transport.get_extra_info("sockname")[1]
        port = self.config.port or free_port(self.config.host)
        self.spec = FrontSpec(
            listen=f"{self.config.host}:{port}",
            fallback=self.fallback,
            admin_socket=self._socket_path(),
            map_path=self.dir / "models.map",
            log_address=f"127.0.0.1:{log_port}",
            retries=self.config.max_retries,
            eject_after=self.config.eject_after_failures,
            max_message_bytes=self.config.max_message_bytes,
            lua_path=self.dir / "too_large.lua",
        )
        self.dir.joinpath("too_large.lua").write_text(TOO_LARGE_LUA)
        await self._apply(self._backends_now())
        return port

    def _socket_path(self) -> Path:
        path = self.dir / "admin.sock"
        if len(str(path)) < 100:  # a UNIX socket path holds at most 107 bytes
            return path
        return Path(tempfile.mkdtemp(prefix="ebbflow-haproxy-")) / "admin.sock"

    async def stop(self) -> None:
        for process in self._processes():
            await process.child.stop(5.0)
        self._current, self._retiring = None, []
        if self._transport is not None:
            self._transport.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the registry, poll statistics, publish telemetry, acknowledge drains; until stop is set."""
        next_telemetry = time.monotonic() + self.config.telemetry_interval_s
        while not stop.is_set():
            changed = self.view.changed
            await wait_any(STATS_POLL_S, stop, changed)
            if stop.is_set():
                return
            try:
                await self._poll()
                backends = self._backends_now()
                if self._current is None or not self._current.child.running:
                    await self._restart(backends)
                elif render(self.spec, backends)[0] not in (self._rendered, self._refused):
                    await self._apply(backends)
                self._reap()
                self._acknowledge_drains()
                if time.monotonic() >= next_telemetry:
                    next_telemetry += self.config.telemetry_interval_s
                    await self._publish_telemetry()
            except Exception:  # one bad round (a reload that failed, NATS away) must not end the front
                log.exception("haproxy front round failed")

    async def _restart(self, backends: list[FrontBackend]) -> None:
        """Start HAProxy again after it died (at most once per RESTART_BACKOFF_S)."""
        if time.monotonic() < self._next_restart_s:
            return
        self._next_restart_s = time.monotonic() + RESTART_BACKOFF_S
        if self._current is not None:
            child = self._current.child
            log.error("haproxy (pid %d) exited with code %s; starting it again:\n%s", child.pid, child.process.returncode, child.tail())
            self._current = None
        await self._apply(backends)

    # ---- configuration ------------------------------------------------------------

    def _backends_now(self) -> list[FrontBackend]:
        by_model: dict[str, list[FrontServer]] = {model: [] for model in self.view.known_models()}
        for entry in self.view.replicas.values():
            if entry.state == READY:
                by_model.setdefault(entry.model, []).append(FrontServer(entry.replica_id, address(entry)))
        routing = {model: routing_from_proto(policy.routing) for model, policy in self.view.policies.items()}
        return [FrontBackend(model, routing.get(model, "least_outstanding"), tuple(servers)) for model, servers in by_model.items()]

    async def _apply(self, backends: list[FrontBackend]) -> None:
        """Write the configuration for `backends` and start an HAProxy on it, replacing the running one."""
        text, models = render(self.spec, backends)
        config_path = self.dir / "haproxy.cfg"
        config_path.write_text(text)
        self.spec.map_path.write_text(models)
        argv = [self.binary, "-db", "-f", str(config_path)]
        previous = self._current
        if previous is not None and previous.child.running:
            await self._poll()  # the counts of the process being replaced, up to now
            argv += ["-x", str(self.spec.admin_socket), "-sf", str(previous.child.pid)]
        child = await spawn("haproxy", argv, self.state_dir / "logs" / "haproxy.log")
        try:
            await self._wait_serving(child)
        except UnavailableError:
            await child.stop(1.0)
            self._refused = text  # not retried until the configuration changes; the running HAProxy keeps serving
            raise
        except asyncio.CancelledError:
            # Stopped mid-reload: this process is in no list stop() walks, so it would outlive the stack (tests
            # that stopped a stack while replicas churned left such haproxy processes behind until pytest exited).
            if child.running:
                child.process.kill()
            raise
        ordered = sorted(backends, key=lambda b: b.model)
        self._backends = {backend_name(i): b.model for i, b in enumerate(ordered)}
        replicas = frozenset(subjects.replica_key(b.model, s.name) for b in backends for s in b.servers)
        if previous is not None:
            self._retiring.append(previous)
            self.reloads += 1
        self._current = _Process(child, replicas)
        self._stats = {}
        self._rendered = text
        log.info("haproxy front (pid %d) routes %d model(s), %d replica(s)", child.pid, len(backends), len(replicas))

    async def _wait_serving(self, child: ChildProcess, timeout_s: float = 10.0) -> None:
        """Until the new process answers on the admin socket (it binds it after taking the listeners over)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not child.running:
                raise UnavailableError(f"haproxy exited with code {child.process.returncode}:\n{child.tail()}")
            try:
                info = await self._admin("show info")
                if f"Pid: {child.pid}" in info:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.02)
        raise UnavailableError(f"haproxy not serving after {timeout_s:.0f} s:\n{child.tail()}")

    async def _admin(self, command: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.spec.admin_socket))
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()

    def _reap(self) -> None:
        self._retiring = [p for p in self._retiring if p.child.running]

    # ---- telemetry ----------------------------------------------------------------

    def _meter(self, model: str, now_s: float) -> ModelMeter:
        meter = self._meters.get(model)
        if meter is None:
            meter = self._meters[model] = ModelMeter(window_start_s=now_s)
        return meter

    async def _poll(self) -> None:
        """Arrivals and in-flight per model from HAProxy's statistics (replica servers only: the Python
        router counts what reaches it)."""
        if self._current is None or not self._current.child.running:
            return
        try:
            stats = parse_stats(await self._admin("show stat"))
        except OSError as error:
            log.debug("haproxy statistics unavailable: %s", error)
            return
        now = time.monotonic()
        arrivals: dict[str, int] = {}
        in_flight: dict[str, int] = {}
        for (backend, server), row in stats.items():
            model = self._backends.get(backend)
            if model is None or server == FALLBACK:
                continue
            before = self._stats.get((backend, server))
            arrivals[model] = arrivals.get(model, 0) + max(0, row.requests_total - (before.requests_total if before else 0))
            in_flight[model] = in_flight.get(model, 0) + row.in_flight
        self._stats = stats
        for model in set(self._backends.values()) | set(self._meters):
            self._meter(model, now).observe(now, arrivals.get(model, 0), in_flight.get(model, 0))

    def on_log(self, line: str) -> None:
        done = parse_log_line(line)
        if done is None or done.server == FALLBACK:
            return
        self._meter(done.model, time.monotonic()).completed(done.seconds, done.ok)
        child = self._codes.get((done.model, done.code))
        if child is None:
            child = self._codes[(done.model, done.code)] = self.metrics.requests.labels(done.model, done.code)
        child.inc()
        self.metrics.latency.labels(done.model).observe(done.seconds)

    async def _publish_telemetry(self) -> None:
        if not self.view.loaded:
            return
        now = time.monotonic()
        models = []
        for model in sorted(self.view.known_models() | set(self._meters)):
            models.append(model_telemetry(model, self._meter(model, now).close_window(now)))
        message = load_pb2.RouterTelemetry(
            router_id=self.router_id, window_end_unix_s=time.time(), window_s=self.config.telemetry_interval_s, models=models
        )
        try:
            await self.bus.nc.publish(subjects.ROUTER_TELEMETRY, message.SerializeToString())
        except Exception as error:  # loss-tolerant, like the Python router's
            log.warning("publishing haproxy front telemetry failed: %s", error)

    def _acknowledge_drains(self) -> None:
        """A draining replica is out of the current configuration; it is idle here once no older HAProxy
        that had it is left (each finishes its calls before it exits)."""
        draining = {key: entry for key, entry in self.view.replicas.items() if entry.state == DRAINING}
        for key in list(self._acked):
            if key not in draining:
                del self._acked[key]
        for key, entry in draining.items():
            holders = sum(1 for p in self._processes() if key in p.replicas and p.child.running)
            if self._acked.get(key) == holders:
                continue
            self._acked[key] = holders
            ack = registry_pb2.DrainAck(router_id=self.router_id, model=entry.model, replica_id=entry.replica_id, in_flight=holders)
            asyncio.ensure_future(self.bus.nc.publish(subjects.drain_ack_subject(entry.model, entry.replica_id), ack.SerializeToString()))


async def _run_front() -> None:
    """`python -m ebbflow.router.front`: the front on its own, before a router at $EBBFLOW_FRONT_FALLBACK
    (what benchmarks/router_overhead.py runs, so its Python side's CPU is counted apart)."""
    from prometheus_client import CollectorRegistry

    from ebbflow.router.worker import child_process

    async with child_process("ebbflow-front") as (config, bus, view, stop):
        fallback, state_dir = os.environ["EBBFLOW_FRONT_FALLBACK"], Path(os.environ["EBBFLOW_STATE_DIR"])
        front = HaproxyFront(config, bus, view, fallback, state_dir, RouterMetrics(CollectorRegistry()))
        await front.start()
        runner = asyncio.create_task(front.run(stop))
        Path(os.environ["EBBFLOW_READY_FILE"]).touch()
        await stop.wait()
        await asyncio.gather(runner, return_exceptions=True)
        await front.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run_front())
