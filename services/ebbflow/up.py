"""The `ebbflow up` process: its state directory and lock, its logging, the stack's lifetime, and `down`.

One `ebbflow up` runs per state directory. It holds the directory's lock for its whole life, writes
`state.json` (its pid and the addresses of NATS, the router, the control API and `/metrics`) once the
stack has started, and removes it when the stack has stopped. The CLI's other commands find the
running stack through that file (`read_state`); `ebbflow down` through the lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TextIO

from ebbflow.runtime.config import Config
from ebbflow.runtime.errors import AlreadyRunningError, EbbflowError
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.nats_auth import SUPERVISOR, NatsUsers, write_private
from ebbflow.runtime.process import ChildProcess
from ebbflow.v1 import discovery_pb2

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    if os.environ.get("EBBFLOW_STATE_DIR"):
        return Path(os.environ["EBBFLOW_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ebbflow"


def say(line: str, stream: TextIO = sys.stdout) -> None:
    """ebbflow's own short terminal lines (child processes log to files)."""
    print(f"{time.strftime('%H:%M:%S')} {line}", file=stream, flush=True)


class StateDirLock:
    """One `ebbflow up` per state directory, enforced by an advisory lock that dies with the process."""

    def __init__(self, state_dir: Path) -> None:
        self.path = self.path_of(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise AlreadyRunningError(
                f"another ebbflow up (pid {holder}) is using state directory {state_dir}; stop it or pass another --state-dir"
            ) from None
        self._file.truncate(0)
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        self._file.close()

    @staticmethod
    def path_of(state_dir: Path) -> Path:
        return state_dir / "lock"

    @classmethod
    def holder(cls, state_dir: Path) -> int | None:
        """The pid of the `ebbflow up` holding this state directory's lock (0: unreadable); None when none holds it."""
        try:
            with open(cls.path_of(state_dir)) as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    lock.seek(0)
                    text = lock.read().strip()
                    return int(text) if text.isdigit() else 0
                return None  # free: nothing runs (closing the file drops the probe's lock)
        except FileNotFoundError:
            return None


def read_state(state_dir: Path) -> dict[str, Any]:
    """The running stack's pid and addresses, as its `ebbflow up` wrote them."""
    try:
        return dict(json.loads((state_dir / STATE_FILE).read_text()))
    except FileNotFoundError:
        raise EbbflowError(f"no running ebbflow up found in state directory {state_dir}; start one with `ebbflow up` or pass --state-dir") from None


def _configure_logging(state_dir: Path, verbose: bool) -> None:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "ebbflow.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)


def _check_port_free(host: str, port: int, state_dir: Path, http: bool = False) -> None:
    """Fail at once, before starting anything, when a router port is taken (by anything but the HAProxy front
    a killed `ebbflow up` left serving on this state directory: the router service adopts that one)."""
    if port == 0 or _front_listens(state_dir, host, port, http):
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise AlreadyRunningError(
                f"cannot listen on {host}:{port}: {error.strerror} (another ebbflow up?); pick another with "
                + ("--router-http-port" if http else "--router-port")
            ) from None


def _front_listens(state_dir: Path, host: str, port: int, http: bool) -> bool:
    """Whether the HAProxy front a killed `ebbflow up` left on this state directory still serves host:port
    (its gRPC port, or with `http` its HTTP port)."""
    from ebbflow.router.front import front_processes, read_record

    record = read_record(state_dir)
    listen = (record.http_listen if http else record.listen) if record is not None else ""
    return listen == f"{host}:{port}" and bool(front_processes(state_dir))


SERVICE_ORDER = ("actuator", "collector", "scheduler", "router", "forecaster")
"""The order `ebbflow up` starts its services in (any order works; this one serves the first request soonest)."""
STOP_ORDER = ("router", "forecaster", "scheduler", "collector", "actuator")
"""The router first: its front finishes the calls in flight before anything behind it goes."""
SERVICE_READY_TIMEOUT_S = 120.0
SERVICE_STOP_TIMEOUT_S = 40.0
"""A service not gone this long after SIGTERM is killed (the router's drain and the actuator's drains fit in it)."""


class Services:
    """The service processes of one `ebbflow up` (`ebbflow serve SERVICE` each), kept running and stopped in order.

    Each gets fixed addresses for its life (chosen here when its config leaves port 0), so a restarted service
    is where it was, and `state.json` can name them for the CLI even while NATS is away.
    """

    def __init__(
        self, config_path: Path | None, overrides: dict[str, str], config: Config, nats_url: str, state_dir: Path, users: NatsUsers | None = None
    ) -> None:
        from ebbflow.runtime.nats_server import Supervised

        self.users = users
        """`ebbflow up`'s own nats-server: each service connects as its own user (runtime.nats_auth)."""
        self.config_path = config_path
        self.overrides = dict(overrides)
        self.nats_url = nats_url
        self.state_dir = state_dir
        self.addresses: dict[str, tuple[str, str]] = {}
        for service in SERVICE_ORDER:
            section = getattr(config, service)
            self.addresses[service] = (_fixed(section.grpc_listen), _fixed(section.metrics_listen))
        self.ready_dir = state_dir / "ready"
        self.supervised = {service: Supervised(service, self._starter(service), say) for service in SERVICE_ORDER}

    def _starter(self, service: str) -> Callable[[], Awaitable[ChildProcess]]:
        async def start() -> ChildProcess:
            return await self._start(service)

        return start

    async def _start(self, service: str) -> ChildProcess:
        from ebbflow.runtime.process import spawn, venv_environment

        grpc_listen, metrics_listen = self.addresses[service]
        env = venv_environment()
        env.update(self.overrides)
        prefix = f"EBBFLOW_{service.upper()}__"
        env[prefix + "GRPC_LISTEN"], env[prefix + "METRICS_LISTEN"] = grpc_listen, metrics_listen
        supervised = self.supervised[service]
        env["EBBFLOW_RESTARTS"], env["EBBFLOW_LAST_EXIT"] = str(supervised.restarts + (1 if supervised.last_exit else 0)), supervised.last_exit
        ready = self.ready_dir / service
        ready.unlink(missing_ok=True)
        env["EBBFLOW_READY_FILE"] = str(ready)
        argv = [sys.executable, "-m", "ebbflow.cli", "serve", service, "--state-dir", str(self.state_dir)]
        if self.users is not None:  # in the environment, not the command line everyone can read
            env["EBBFLOW_NATS__URL"] = self.users.url(service, self.nats_url)
        else:
            argv += ["--nats", self.nats_url]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        child = await spawn(service, argv, self.state_dir / "logs" / f"{service}.log", env)
        deadline = time.monotonic() + SERVICE_READY_TIMEOUT_S
        while not ready.exists():
            if not child.running:
                from ebbflow.runtime.errors import UnavailableError

                raise UnavailableError(f"{service} exited during start (code {child.process.returncode}):\n{child.tail(10)}")
            if time.monotonic() > deadline:
                await child.stop(5.0)
                raise EbbflowError(f"{service} not serving {SERVICE_READY_TIMEOUT_S:.0f} s after start; see {child.log_path}")
            await asyncio.sleep(0.05)
        return child

    async def start(self) -> None:
        self.ready_dir.mkdir(parents=True, exist_ok=True)
        for service in SERVICE_ORDER:
            await self.supervised[service].start()

    def run(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(s.run(stop), name=f"{s.name} supervisor") for s in self.supervised.values()]

    async def stop(self) -> None:
        for service in STOP_ORDER:
            await self.supervised[service].stop(SERVICE_STOP_TIMEOUT_S)

    def report(self) -> list[discovery_pb2.SupervisedService]:
        return [
            discovery_pb2.SupervisedService(
                service=name, state=s.state, pid=s.child.pid if s.child and s.child.running else 0, restarts=s.restarts,
                last_exit=s.last_exit, last_exit_unix_s=s.last_exit_unix_s, next_start_unix_s=s.next_start_unix_s,
                grpc_address=self.addresses[name][0], metrics_address=self.addresses[name][1],
            )
            for name, s in self.supervised.items()
        ]


def _fixed(listen: str) -> str:
    """host:port with port 0 replaced by a free port, kept for the supervisor's life."""
    from ebbflow.runtime.process import free_port

    host, _, port = listen.rpartition(":")
    return listen if int(port) else f"{host}:{free_port(host)}"


async def _announce(nats_url: str, services: Services, nats: Any, stop: asyncio.Event) -> None:
    """The supervisor's own announcement (what it runs, restarts, its nats-server), renewed while it runs."""
    from ebbflow.runtime.bus import connect
    from ebbflow.runtime.discovery import HEARTBEAT_S, instance_id

    bus = await connect(nats_url, name=f"ebbflow-up-{os.getpid()}")
    key = f"supervisor.{instance_id('supervisor')}"
    try:
        while not stop.is_set():
            report = discovery_pb2.Supervisor(
                instance_id=instance_id("supervisor"), host=socket.gethostname(), pid=os.getpid(), heartbeat_unix_s=time.time(),
                services=services.report(),
            )
            if nats is not None:
                report.nats_url, report.nats_restarts = nats.url, nats.restarts
                report.nats_last_exit, report.nats_last_exit_unix_s = nats.last_exit, nats.last_exit_unix_s
            try:
                await bus.services.put(key, report.SerializeToString())
            except Exception as error:  # NATS away: the next beat tries again
                log.debug("announcing the supervisor failed: %s", error)
            await wait_any(HEARTBEAT_S, stop, bus.link.reconnected)  # at once after a reconnect: a nats-server restart to report
        try:
            await bus.services.delete(key)
        except Exception as error:
            log.debug("withdrawing the supervisor failed: %s", error)
    finally:
        await bus.close()


async def _stop_fleet(nats_url: str, state_dir: Path) -> None:
    """After the services have stopped: stop the replicas the actuator left serving (each finishes its requests)
    and forget the fleet (its registry entries and desired counts; serve.forget_desired says why), so a clean
    stop leaves nothing running."""
    from nats.js.errors import NoKeysError

    from ebbflow.actuator.leftovers import stop_leftover_replicas
    from ebbflow.router.front import stop_leftover_front
    from ebbflow.runtime.bus import connect
    from ebbflow.serve import forget_desired

    front = await asyncio.to_thread(stop_leftover_front, state_dir)  # left only when the router service died
    stopped = await asyncio.to_thread(stop_leftover_replicas, state_dir)
    if stopped.replicas or front:
        say(f"stopped {stopped.replicas} replica(s)" + (" and the router's HAProxy front" if front else ""))
    try:
        bus = await connect(nats_url, name=f"ebbflow-down-{os.getpid()}", connect_timeout_s=2.0)
    except EbbflowError as error:
        log.warning("cannot reach NATS to forget the fleet (the next actuator deletes the stale entries): %s", error)
        return
    try:
        try:
            keys = list(await bus.replicas.keys())
        except NoKeysError:
            keys = []
        for key in keys:
            await bus.replicas.delete(key)
        try:
            models = sorted(await bus.desired.keys())
        except NoKeysError:
            models = []
        await forget_desired(bus, models)
    finally:
        await bus.close()


async def _run(
    config: Config, config_path: Path | None, overrides: dict[str, str], state_dir: Path, nats_url: str | None, nats_cluster: int = 1,
    prometheus: bool = False,
) -> int:
    from ebbflow.runtime.nats_server import NatsCluster, NatsSupervisor

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    _check_port_free(config.router.host, config.router.port, state_dir)
    router_port = config.router.port or _previous_router_port(state_dir, config.router.host)
    overrides = {**overrides, "EBBFLOW_ROUTER__PORT": str(router_port)}
    http_port = config.router.http_port
    if http_port > 0:
        _check_port_free(config.router.host, http_port, state_dir, http=True)
    elif http_port == 0:
        http_port = _previous_router_port(state_dir, config.router.host, "router_http")
    overrides["EBBFLOW_ROUTER__HTTP_PORT"] = str(http_port)
    nats: NatsSupervisor | NatsCluster | None = None
    services: Services | None = None
    monitor: Any = None  # ebbflow.monitoring.Prometheus with --prometheus
    supervising: list[asyncio.Task[None]] = []
    supervisor_stop = asyncio.Event()  # the supervisors outlive the wait below: services stop in order, NATS last
    try:
        users = None
        if nats_url is None:
            ports = _previous_nats_ports(state_dir)
            users = NatsUsers.for_state_dir(state_dir)  # one user per service, each writing only what it owns
            auth = users.write_server_config(state_dir)
            if nats_cluster > 1:
                nats = NatsCluster(state_dir, nats_cluster, say, ports, config_file=auth)
            else:
                nats = NatsSupervisor(state_dir, say, port=ports[0] if len(ports) == 1 else 0, config_file=auth)
            plain_url = await nats.start()
            nats_url = users.url(SUPERVISOR, plain_url)
            supervising.append(asyncio.create_task(nats.run(supervisor_stop), name="nats-server supervisor"))
            what = f"a {nats_cluster}-node JetStream cluster (buckets and streams on 3 nodes)" if nats_cluster > 1 else "nats-server with JetStream"
            say(f"{what} at {plain_url}, one user per service (started again if it dies)")
        if prometheus:
            from ebbflow.monitoring import Prometheus

            monitor = await Prometheus.start(state_dir)
            supervising.append(asyncio.create_task(monitor.follow(nats_url, supervisor_stop), name="prometheus targets"))
            say(f"prometheus at {monitor.url} (scraping every service and replica found in NATS; rules from deploy/prometheus)")
        services = Services(config_path, overrides, config, nats_url, state_dir, users)
        supervising.append(asyncio.create_task(_announce(nats_url, services, nats, supervisor_stop), name="supervisor announcement"))
        starting = asyncio.ensure_future(services.start())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([starting, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 0
        if starting.exception() is not None:
            say(f"error: {starting.exception()}; see {state_dir / 'logs'}", sys.stderr)
            return 1
        supervising += services.run(supervisor_stop)
        router = f"{config.router.host}:{router_port}"
        router_http = f"{config.router.host}:{http_port}" if http_port >= 0 else ""
        scheduler_grpc, scheduler_metrics = services.addresses["scheduler"]
        write_private(  # the NATS URL carries the supervisor's password
            state_dir / STATE_FILE,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "nats_url": nats_url,
                    "router": router,
                    "router_http": router_http,
                    "control": scheduler_grpc,
                    "metrics": scheduler_metrics,
                    "services": {name: {"grpc": grpc, "metrics": metrics} for name, (grpc, metrics) in services.addresses.items()},
                    "prometheus": monitor.url if monitor is not None else "",
                }
            ),
        )
        if router_http:
            say(f"KServe v2 HTTP on http://{router_http}/v2 (tritonclient.http, curl; generate and generate_stream)")
        say(f"router listening on {router}; gRPC APIs: " + ", ".join(f"{name} {grpc}" for name, (grpc, _) in services.addresses.items()))
        say("metrics: " + ", ".join(f"{name} http://{metrics}/metrics" for name, (_, metrics) in services.addresses.items()))
        serving = [m.model for m in config.models if m.min_replicas > 0]
        waiter = asyncio.ensure_future(_wait_serving(nats_url, serving, config.actuator.ready_timeout_s))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        if waiter.done() and waiter.exception() is None:
            say(f"ebbflow ready: Triton gRPC clients can use {router} (models: {', '.join(m.model for m in config.models)})")
        elif waiter.done():
            say(f"error: models did not come up: {waiter.exception() or 'timeout'}; see {state_dir / 'logs'}", sys.stderr)
            return 1
        else:
            waiter.cancel()
        await stop.wait()
        say("stopping")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)  # a second Ctrl-C during shutdown must not restart anything
            signal.signal(sig, signal.SIG_IGN)
        supervisor_stop.set()
        await asyncio.gather(*supervising, return_exceptions=True)
        if monitor is not None:
            await monitor.stop()
        if services is not None:
            await services.stop()
        if nats_url is not None:
            await _stop_fleet(nats_url, state_dir)
        if nats is not None:
            await nats.stop(5.0)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        say("stopped")


async def _wait_serving(nats_url: str, models: list[str], timeout_s: float) -> None:
    """Return once the registry holds a ready replica of each model."""
    from ebbflow.runtime.registry import connected

    async with connected(nats_url, "ebbflow-up-ready") as (_, view):
        async def all_ready() -> None:
            while not all(view.ready(m) for m in models):
                await view.wait_changed(0.5)

        await asyncio.wait_for(all_ready(), timeout_s)


def _previous(state_dir: Path, key: str) -> str:
    """A value from the state.json an `ebbflow up` killed on this state directory left behind ("" if none)."""
    try:
        return str(json.loads((state_dir / STATE_FILE).read_text()).get(key, ""))
    except (OSError, ValueError):
        return ""


def _previous_nats_ports(state_dir: Path) -> tuple[int, ...]:
    """The ports of the previous run's nats-server(s) when all are free again: what that run left serving (the
    router front's shell, replicas' clients) reconnects there. Empty when there is none."""
    from ebbflow.runtime.bus import servers_of

    ports = tuple(int(server.rsplit(":", 1)[1]) for server in servers_of(_previous(state_dir, "nats_url")))
    return ports if ports and all(_free("127.0.0.1", port) for port in ports) else ()


def _previous_router_port(state_dir: Path, host: str, key: str = "router") -> int:
    """With router.port (or http_port) 0: the previous run's port when free again (clients keep their address),
    else a free one."""
    from ebbflow.runtime.process import free_port

    router = _previous(state_dir, key)
    port = int(router.rsplit(":", 1)[1]) if ":" in router else 0
    # the front that run left serving holds it: the router service adopts that front, port and all
    return port if port and (_free(host, port) or _front_listens(state_dir, host, port, key == "router_http")) else free_port(host)


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False


def up(
    config: Config, state_dir: Path, nats_url: str | None, verbose: bool, config_path: Path | None = None,
    overrides: dict[str, str] | None = None, nats_cluster: int = 1, prometheus: bool = False,
) -> int:
    """Run the stack in the foreground until SIGINT or SIGTERM; the exit status.

    `config` is what `config_path` and `overrides` (EBBFLOW_<SECTION>__<SETTING> values from the command line)
    give; each service process reads the same file and overrides."""
    lock = StateDirLock(state_dir)
    try:
        _configure_logging(state_dir, verbose)
        return asyncio.run(_run(config, config_path, overrides or {}, state_dir, nats_url, nats_cluster, prometheus))
    finally:
        lock.release()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # a zombie has exited; its parent reaps it
    except psutil.NoSuchProcess:
        return False


def down(state_dir: Path, timeout_s: float) -> int:
    """SIGTERM to the `ebbflow up` of this state directory, then wait until it has released the directory; with none
    running, stop the replicas a killed one left serving."""
    pid = StateDirLock.holder(state_dir)
    if pid is None:
        (state_dir / STATE_FILE).unlink(missing_ok=True)  # left by an `up` that was killed: nothing answers there
        if _stop_leftovers(state_dir, timeout_s):
            return 0
        raise EbbflowError(f"no running ebbflow up found in state directory {state_dir}; nothing to stop")
    if not pid:
        raise EbbflowError(f"the lock of {state_dir} is held but names no process; stop that ebbflow up with Ctrl-C or kill")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # exited between the probe and the signal: the wait below sees the lock free
    say(f"stopping ebbflow up (pid {pid}) in {state_dir}")
    deadline = time.monotonic() + timeout_s
    while StateDirLock.holder(state_dir) is not None or _alive(pid):  # the lock goes a moment before the process exits
        if time.monotonic() > deadline:
            raise EbbflowError(f"ebbflow up (pid {pid}) has not stopped {timeout_s:g} s after SIGTERM; see {state_dir / 'logs'}")
        time.sleep(0.2)
    say("stopped")
    return 0


def _stop_leftovers(state_dir: Path, timeout_s: float) -> bool:
    """The router's front and the replicas outlive a killed `ebbflow up` (they keep serving); with no `up` left to
    stop them, `down` does. Whether there was anything to stop."""
    from ebbflow.actuator.leftovers import stop_leftover_replicas
    from ebbflow.router.front import stop_leftover_front

    front = stop_leftover_front(state_dir, drain_timeout_s=min(timeout_s, 10.0))
    if front:
        say(f"no ebbflow up runs in {state_dir}; stopped the router's HAProxy front it left serving (pid {', '.join(map(str, front))})")
    stopped = stop_leftover_replicas(state_dir, grace_s=min(timeout_s, 15.0))
    if not (stopped.replicas or stopped.processes or stopped.regions):
        return bool(front)
    say(f"no ebbflow up runs in {state_dir}; stopped the {stopped.replicas} replica(s) it left serving "
        f"({stopped.processes} leftover process(es), {stopped.regions} shared-memory region(s) removed)")
    return True
