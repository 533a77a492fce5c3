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

HAProxy is data plane and outlives this shell: it runs in a session of its
own, without PR_SET_PDEATHSIG, and keeps forwarding on its last
configuration while no shell runs (a crash, a restart). The shell writes a
pid file, `haproxy/front.json` (`FrontRecord`), after every (re)load; a
shell started later on the same state directory adopts the HAProxy it finds
there (router.haproxy.choose_adoption) and reloads it as usual from then on,
instead of starting another on the port. `stop` is HAProxy's soft stop by
default: the listeners close, calls in flight finish, bounded by
`router.drain_timeout_s`. `release` leaves HAProxy running on purpose, and
`stop_leftover_front` stops what a front left in a state directory when no
shell is there to do it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ebbflow.policy import routing_from_proto
from ebbflow.router.core import ModelMeter
from ebbflow.router.haproxy import (
    FALLBACK,
    HTTP_SUFFIX,
    OVERLOAD_GRPC,
    OVERLOAD_HTTP,
    FRONT_LUA,
    EarlierFront,
    FrontBackend,
    FrontRecord,
    FrontServer,
    FrontSpec,
    FrontTenant,
    ServerStats,
    backend_name,
    choose_adoption,
    tenant_maps,
    config_digest,
    parse_log_line,
    parse_map,
    parse_stats,
    render,
    running_configuration,
    servers_in,
)
from ebbflow.router.shedding import shed_limit
from ebbflow.router.telemetry import RouterMetrics, misses_objective, model_telemetry
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.process import DetachedProcess, find_processes, free_port, start_detached
from ebbflow.runtime.registry import RegistryView
from ebbflow.runtime.tls import ServerTls, server_tls
from ebbflow.runtime.wire import DRAINING, READY, address, http_address
from ebbflow.v1 import load_pb2, registry_pb2

log = logging.getLogger(__name__)

STATS_POLL_S = 0.2
RESTART_BACKOFF_S = 2.0
HARD_STOP_WAIT_S = 2.0
"""After the drain bound (or at once without draining): how long HAProxy's hard stop (SIGTERM) may take before SIGKILL."""
RECORD_FILE = "front.json"
"""The front's pid file, under <state-dir>/haproxy (router.haproxy.FrontRecord)."""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)


def front_dir(state_dir: Path) -> Path:
    """Where a front keeps its configuration, map and pid file."""
    return (state_dir / "haproxy").resolve()


def front_processes(state_dir: Path) -> list[int]:
    """Live HAProxy processes started on this state directory's configuration (serving, or finishing calls)."""
    return find_processes(("-f", str(front_dir(state_dir) / "haproxy.cfg")))


def read_record(state_dir: Path) -> FrontRecord | None:
    try:
        return FrontRecord.from_json((front_dir(state_dir) / RECORD_FILE).read_text())
    except OSError:
        return None


def _forget(state_dir: Path, admin_socket: Path | None) -> None:
    """Remove the pid file and the admin socket (with the private directory it got when the state directory's
    path was too long for one)."""
    (front_dir(state_dir) / RECORD_FILE).unlink(missing_ok=True)
    if admin_socket is None:
        return
    admin_socket.unlink(missing_ok=True)
    if admin_socket.parent.name.startswith("ebbflow-haproxy-"):
        shutil.rmtree(admin_socket.parent, ignore_errors=True)


def stop_leftover_front(state_dir: Path, drain_timeout_s: float = 10.0) -> list[int]:
    """Stop the HAProxy front a router left running in `state_dir` (for `ebbflow down` when no router process
    is left, and tests' clean-up): soft stop, SIGKILL what is left after drain_timeout_s; remove its pid file
    and admin socket. Returns the pids it stopped. Never call it while a router serves from `state_dir`."""
    processes = [DetachedProcess.found("haproxy", pid, state_dir / "logs" / "haproxy.log") for pid in front_processes(state_dir)]
    for process in processes:
        process.send(signal.SIGUSR1)
    deadline = time.monotonic() + drain_timeout_s
    while any(p.running for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in processes:
        if process.running:
            log.warning("leftover haproxy (pid %d) still busy %g s after its soft stop; killing it", process.pid, drain_timeout_s)
            process.send(signal.SIGKILL)
    record = read_record(state_dir)
    _forget(state_dir, Path(record.admin_socket) if record else None)
    return [p.pid for p in processes]


class _LogReceiver(asyncio.DatagramProtocol):
    def __init__(self, front: HaproxyFront) -> None:
        self.front = front

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.front.on_log(data.decode(errors="replace"))


@dataclass
class _Process:
    process: DetachedProcess
    replicas: frozenset[str] | None  # replica keys in its configuration; None: unknown (found running), may hold any


@dataclass
class HaproxyFront:
    config: RouterConfig
    bus: Bus
    view: RegistryView
    fallback: str  # host:port of the Python router
    state_dir: Path
    metrics: RouterMetrics
    http_fallback: str = ""  # host:port of the Python router's HTTP API; "" serves no HTTP
    router_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-haproxy")
    reloads: int = 0

    def __post_init__(self) -> None:
        self.dir = front_dir(self.state_dir)
        self._current: _Process | None = None
        self._retiring: list[_Process] = []
        self._rendered = ""  # the configuration the serving HAProxy runs
        self.tls: ServerTls | None = None  # router.tls_cert_file, read at start
        self._rendered_map = ""
        self._refused = ""  # a configuration HAProxy would not start on
        self._next_restart_s = 0.0
        self._backends: dict[str, str] = {}  # backend name → model
        self._stats: dict[tuple[str, str], ServerStats] = {}
        self._meters: dict[str, ModelMeter] = {}
        self._acked: dict[str, int] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._codes: dict[tuple[str, str], Any] = {}
        self._tenant_counts: dict[tuple[str, str, str], Any] = {}
        """Per-tenant counters of the fast path by (tenant, model, refusal), bound once."""
        self._lock = asyncio.Lock()  # one (re)load or stop at a time
        self._done = False  # stopped or released: HAProxy is no longer this shell's to start or reload
        self._released = False
        self._admin_socket: Path | None = None  # once started
        self.adopted_pid: int | None = None

    def _processes(self) -> list[_Process]:
        """The serving HAProxy and those replaced but still finishing calls."""
        return [*([self._current] if self._current else []), *self._retiring]

    @property
    def pids(self) -> list[int]:
        return [p.process.pid for p in self._processes() if p.process.running]

    @property
    def http_listen(self) -> str:
        """host:port of the KServe v2 HTTP frontend once started ("" when it serves none)."""
        return self.spec.http_listen

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / "haproxy.log"

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> int:
        """Serve on the router's port (0 picks a free one) and return the port: through the HAProxy an earlier
        shell left on this state directory when it can be adopted, else through a new one."""
        binary = haproxy_binary()
        if binary is None:
            raise UnavailableError("router.front is haproxy but no haproxy binary was found (Debian: apt-get install haproxy)")
        self.binary = binary
        self.tls = server_tls(self.config.tls_cert_file, self.config.tls_key_file, self.config.tls_client_ca_file)
        self.dir.mkdir(parents=True, exist_ok=True)
        earlier = await self._find_earlier()
        http_port = self.config.http_port if self.http_fallback else -1
        adopted, reason = choose_adoption(earlier, os.path.realpath(binary), self.config.host, self.config.port, http_port)
        record = earlier.record if adopted is not None else None
        self._transport = await self._log_receiver(record.log_port if record else 0)
        log_port = self._transport.get_extra_info("sockname")[1]
        listen = record.listen if record else f"{self.config.host}:{self.config.port or free_port(self.config.host)}"
        http_listen = ""
        if http_port >= 0:
            http_listen = record.http_listen if record else f"{self.config.host}:{http_port or free_port(self.config.host)}"
        self.spec = FrontSpec(
            listen=listen,
            fallback=self.fallback,
            admin_socket=Path(record.admin_socket) if record else self._socket_path(),
            map_path=self.dir / "models.map",
            log_address=f"127.0.0.1:{log_port}",
            retries=self.config.max_retries,
            eject_after=self.config.eject_after_failures,
            max_message_bytes=self.config.max_message_bytes,
            lua_path=self.dir / "too_large.lua",
            http_listen=http_listen,
            http_fallback=self.http_fallback,
            tls_pem=self.dir / "front.pem" if self.tls else None,
            tls_client_ca=Path(self.config.tls_client_ca_file).resolve() if self.tls and self.config.tls_client_ca_file else None,
            overload_dir=self.dir,
            tenant_dir=self.dir if self.config.require_api_key else None,
        )
        self._admin_socket = self.spec.admin_socket
        self.dir.joinpath("too_large.lua").write_text(FRONT_LUA)
        if self.tls is not None:  # the key too: readable by this user only
            pem = self.dir / "front.pem"
            pem.touch(mode=0o600)
            pem.chmod(0o600)
            pem.write_bytes(self.tls.haproxy_pem())
        self.dir.joinpath("overload_grpc.http").write_text(OVERLOAD_GRPC)
        self.dir.joinpath("overload_http.http").write_text(OVERLOAD_HTTP)
        # Processes of an earlier front that are not adopted: replaced ones finishing their calls, or one that
        # cannot be adopted. Each is told to finish softly (a second SIGUSR1 is harmless) and watched until it exits.
        for pid in sorted(earlier.processes - {adopted}):
            found = DetachedProcess.found("haproxy", pid, self.log_path)
            found.send(signal.SIGUSR1)
            self._retiring.append(_Process(found, None))
        if adopted is not None and record is not None:
            await self._adopt(DetachedProcess.found("haproxy", adopted, self.log_path), record)
            log.info("haproxy front adopted: %s", reason)
        elif earlier.record is not None or earlier.processes:
            log.warning("not adopting the haproxy front left in %s (%s); starting a new one", self.dir, reason)
            _forget(self.state_dir, Path(earlier.record.admin_socket) if earlier.record else None)
        backends = self._backends_now()
        if render(self.spec, backends)[0] != self._rendered:
            await self._apply(backends)
        return int(listen.rpartition(":")[2])

    async def _log_receiver(self, port: int) -> asyncio.DatagramTransport:
        """The UDP endpoint HAProxy's log lines arrive at: on `port` when it is free (an adopted HAProxy keeps
        logging there with no reload), else on a free one."""
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _LogReceiver(self), local_addr=("127.0.0.1", port))
        except OSError:
            transport, _ = await loop.create_datagram_endpoint(lambda: _LogReceiver(self), local_addr=("127.0.0.1", 0))
        return transport

    async def _find_earlier(self) -> EarlierFront:
        record = read_record(self.state_dir)
        answering, binary = None, ""
        if record is not None:
            try:
                info = await asyncio.wait_for(self._admin("show info", Path(record.admin_socket)), 2.0)
                answering = next((int(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("Pid:")), None)
            except (OSError, ValueError, asyncio.TimeoutError):
                pass
            if answering is not None:
                try:
                    binary = os.path.realpath(os.readlink(f"/proc/{answering}/exe"))
                except OSError:
                    pass
        return EarlierFront(record, answering, binary, frozenset(front_processes(self.state_dir)))

    async def _adopt(self, process: DetachedProcess, record: FrontRecord) -> None:
        """Take over the running HAProxy as if this shell had started it: its configuration (when the files on
        disk are what it runs, so an unchanged registry needs no reload), its backends and its counters so far."""
        config_path = self.dir / "haproxy.cfg"
        try:
            text, models = config_path.read_text(), self.spec.map_path.read_text()
        except OSError:
            text, models = "", ""
        self._rendered = running_configuration(record, process.pid, text)
        replicas = None
        if self._rendered:
            self._rendered_map, self._backends = models, parse_map(models)
            replicas = frozenset(subjects.replica_key(model, server) for model, server in servers_in(text, self._backends))
        self._current = _Process(process, replicas)
        self.adopted_pid = process.pid
        try:
            self._stats = parse_stats(await self._admin("show stat"))  # telemetry counts from here, not from its start
        except OSError:
            pass

    def _socket_path(self) -> Path:
        path = self.dir / "admin.sock"
        if len(str(path)) < 100:  # a UNIX socket path holds at most 107 bytes
            return path
        return Path(tempfile.mkdtemp(prefix="ebbflow-haproxy-")) / "admin.sock"

    async def stop(self, drain: bool = True) -> None:
        """Stop every HAProxy of this front and remove its pid file and admin socket.

        drain: HAProxy's soft stop (SIGUSR1): the listeners close at once (clients' new connections are
        refused; HTTP/2 clients get a GOAWAY and open new calls elsewhere), calls in flight finish, for at most
        `router.drain_timeout_s`; then, as without drain, a hard stop (SIGTERM, SIGKILL after HARD_STOP_WAIT_S).
        """
        if self._released:
            return
        async with self._lock:
            self._done = True
            processes = [p.process for p in self._processes() if p.process.running]
            if drain:
                for process in processes:
                    process.send(signal.SIGUSR1)
                await asyncio.gather(*(p.wait(self.config.drain_timeout_s) for p in processes))
                late = [p.pid for p in processes if p.running]
                if late:
                    log.warning("haproxy %s still busy %g s after its soft stop (router.drain_timeout_s); stopping it hard", late, self.config.drain_timeout_s)
            await asyncio.gather(*(p.stop(HARD_STOP_WAIT_S) for p in processes if p.running))
            self._current, self._retiring = None, []
            _forget(self.state_dir, self._admin_socket)
            self._close_receiver()

    def release(self) -> None:
        """Stop following the registry and leave HAProxy serving on its last configuration, for a later shell on
        this state directory to adopt (the pid file stays). `stop` afterwards does nothing."""
        self._done = self._released = True
        self._current, self._retiring = None, []
        self._close_receiver()

    def _close_receiver(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the registry, poll statistics, publish telemetry, acknowledge drains; until stop is set."""
        next_telemetry = time.monotonic() + self.config.telemetry_interval_s
        while not stop.is_set() and not self._done:
            changed = self.view.changed
            await wait_any(STATS_POLL_S, stop, changed)
            if stop.is_set() or self._done:
                return
            try:
                await self._poll()
                backends = self._backends_now()
                if self._current is None or not self._current.process.running:
                    await self._restart(backends)
                elif render(self.spec, backends, self._tenants_now())[0] not in (self._rendered, self._refused):
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
            process = self._current.process
            log.error("haproxy (pid %d) %s; starting it again:\n%s", process.pid, process.exit_description(), process.tail())
            self._current = None
        await self._apply(backends)

    # ---- configuration ------------------------------------------------------------

    def _backends_now(self) -> list[FrontBackend]:
        by_model: dict[str, list[FrontServer]] = {model: [] for model in self.view.known_models()}
        for entry in self.view.replicas.values():
            if entry.state == READY:
                by_model.setdefault(entry.model, []).append(FrontServer(entry.replica_id, address(entry), http_address(entry)))
        routing = {model: routing_from_proto(policy.routing) for model, policy in self.view.policies.items()}
        backends = []
        for model, servers in by_model.items():
            limit = shed_limit(self.view.policies.get(model), len(servers))  # the whole limit: one front, one process
            per_replica = math.ceil(limit / len(servers)) if limit is not None else 0
            backends.append(FrontBackend(model, routing.get(model, "least_outstanding"), tuple(servers), per_replica))
        return backends

    def _tenants_now(self) -> list[FrontTenant]:
        """The active tenants, for the fast path's key check (router.require_api_key)."""
        return [
            FrontTenant(t.name, t.key_sha256, tuple(t.models), t.requests_per_minute, fast=not t.tokens_per_minute)
            for t in self.view.tenants.values() if not t.revoked_unix_s
        ]  # fmt: skip

    async def _apply(self, backends: list[FrontBackend]) -> None:
        """Write the configuration for `backends` and start an HAProxy on it, replacing the running one."""
        async with self._lock:
            if self._done:  # stopped or released meanwhile: starting one now would leave it behind
                return
            await self._apply_locked(backends)
        self._write_record()

    async def _apply_locked(self, backends: list[FrontBackend]) -> None:
        """_apply's work, with no other (re)load or stop under way."""
        tenants = self._tenants_now()
        text, models = render(self.spec, backends, tenants)
        if self.spec.tenant_dir is not None:  # read when HAProxy starts: written before it is
            for name, content in tenant_maps(tenants).items():
                self.spec.tenant_dir.joinpath(name).write_text(content)
        config_path = self.dir / "haproxy.cfg"
        config_path.write_text(text)
        self.spec.map_path.write_text(models)
        argv = [self.binary, "-db", "-f", str(config_path)]
        previous = self._current
        if previous is not None and previous.process.running:
            await self._poll()  # the counts of the process being replaced, up to now
            # -sf names the process by pid, so one adopted from an earlier shell is replaced like our own.
            argv += ["-x", str(self.spec.admin_socket), "-sf", str(previous.process.pid)]
        started = start_detached("haproxy", argv, self.log_path)
        try:
            await self._wait_serving(started)
        except UnavailableError:
            started.send(signal.SIGKILL)
            await started.wait(1.0)
            self._refused = text  # not retried until the configuration changes; the running HAProxy keeps serving
            if self._rendered:  # the files on disk stay what runs (a later shell adopts by them)
                config_path.write_text(self._rendered)
                self.spec.map_path.write_text(self._rendered_map)
            raise
        except asyncio.CancelledError:
            # Stopped mid-reload: this process is in no list stop() walks, so it would outlive the stack.
            started.send(signal.SIGKILL)
            raise
        ordered = sorted(backends, key=lambda b: b.model)
        self._backends = {name + suffix: b.model for i, b in enumerate(ordered) for name in [backend_name(i)] for suffix in ("", HTTP_SUFFIX)}
        replicas = frozenset(subjects.replica_key(b.model, s.name) for b in backends for s in b.servers)
        if previous is not None:
            self._retiring.append(previous)
            self.reloads += 1
        self._current = _Process(started, replicas)
        self._stats = {}
        self._rendered, self._rendered_map = text, models
        log.info("haproxy front (pid %d) routes %d model(s), %d replica(s)", started.pid, len(backends), len(replicas))

    def _write_record(self) -> None:
        """The pid file, replaced whole (a reader never sees half of it)."""
        if self._current is None or self._done:
            return
        record = FrontRecord(
            pid=self._current.process.pid,
            listen=self.spec.listen,
            admin_socket=str(self.spec.admin_socket),
            log_port=int(self.spec.log_address.rpartition(":")[2]),
            config_sha256=config_digest(self._rendered),
            http_listen=self.spec.http_listen,
        )
        path = self.dir / RECORD_FILE
        path.with_suffix(".tmp").write_text(record.to_json())
        path.with_suffix(".tmp").replace(path)

    async def _wait_serving(self, process: DetachedProcess, timeout_s: float = 10.0) -> None:
        """Until the new process answers on the admin socket (it binds it after taking the listeners over)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not process.running:
                raise UnavailableError(f"haproxy {process.exit_description()}:\n{process.tail()}")
            try:
                info = await self._admin("show info")
                if f"Pid: {process.pid}" in info:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.02)
        raise UnavailableError(f"haproxy not serving after {timeout_s:.0f} s:\n{process.tail()}")

    async def _admin(self, command: str, socket_path: Path | None = None) -> str:
        reader, writer = await asyncio.open_unix_connection(str(socket_path or self.spec.admin_socket))
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()

    def _reap(self) -> None:
        self._retiring = [p for p in self._retiring if p.process.running]

    # ---- telemetry ----------------------------------------------------------------

    def _meter(self, model: str, now_s: float) -> ModelMeter:
        meter = self._meters.get(model)
        if meter is None:
            meter = self._meters[model] = ModelMeter(window_start_s=now_s)
        return meter

    async def _poll(self) -> None:
        """Arrivals and in-flight per model from HAProxy's statistics (replica servers only: the Python
        router counts what reaches it)."""
        if self._current is None or not self._current.process.running:
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
        if done.tenant:
            key = (done.tenant, done.model, done.refused)
            tenant_child = self._tenant_counts.get(key)
            if tenant_child is None:
                counter = self.metrics.tenant_rejections.labels(done.tenant, "rate") if done.refused == "rate" else None
                tenant_child = self._tenant_counts[key] = counter or self.metrics.tenant_requests.labels(done.tenant, done.model)
            tenant_child.inc()
        policy = self.view.policies.get(done.model)  # HAProxy's log has no first-response time: latency only
        if done.ok and policy is not None and misses_objective(done.seconds, -1.0, policy.slo_latency_s, 0.0):
            self.metrics.slow.labels(done.model).inc()

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
            holders = sum(1 for p in self._processes() if (p.replicas is None or key in p.replicas) and p.process.running)
            if self._acked.get(key) == holders:
                continue
            self._acked[key] = holders
            ack = registry_pb2.DrainAck(router_id=self.router_id, model=entry.model, replica_id=entry.replica_id, in_flight=holders)
            asyncio.ensure_future(self.bus.nc.publish(subjects.drain_ack_subject(entry.model, entry.replica_id), ack.SerializeToString()))


async def _run_front() -> None:
    """`python -m ebbflow.router.front`: the front on its own, before a router at $EBBFLOW_FRONT_FALLBACK (and
    its HTTP port at $EBBFLOW_FRONT_HTTP_FALLBACK), what benchmarks/router_overhead.py and http_overhead.py run,
    so its Python side's CPU is counted apart."""
    from prometheus_client import CollectorRegistry

    from ebbflow.router.worker import child_process

    async with child_process("ebbflow-front") as (config, bus, view, stop):
        fallback, state_dir = os.environ["EBBFLOW_FRONT_FALLBACK"], Path(os.environ["EBBFLOW_STATE_DIR"])
        http_fallback = os.environ.get("EBBFLOW_FRONT_HTTP_FALLBACK", "")  # the router's HTTP port; unset: no HTTP frontend
        front = HaproxyFront(config, bus, view, fallback, state_dir, RouterMetrics(CollectorRegistry()), http_fallback=http_fallback)
        await front.start()
        runner = asyncio.create_task(front.run(stop))
        Path(os.environ["EBBFLOW_READY_FILE"]).touch()
        await stop.wait()
        await asyncio.gather(runner, return_exceptions=True)
        await front.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run_front())
