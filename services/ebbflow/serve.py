"""One service per process: `ebbflow serve router|collector|forecaster|scheduler|actuator`.

Each service runs in a `ServiceHost`, the shell every service shares: its own
NATS connection (waiting, and saying so, while NATS is not up yet), its own
gRPC server (health, reflection, its APIs and `StatusService`), its own
Prometheus `/metrics`, and its announcement in the KV bucket `services`
(runtime/discovery.py), through which the CLI and the other services find it.
Between services there is only NATS and gRPC: the forecaster finds the
collector's history API through the announcements, status is followed from
NATS (status.LiveStatus), the actuator publishes its crash loops.

`ebbflow up` starts these same services, each as its own process under its
supervisor (up.py); the tests compose them in one process (stack.py). The
embedded default and a distributed deployment differ only in who starts the
processes.

What SIGTERM does, per service (docs/architecture.md "Static stability"):
the router stops taking calls and finishes those in flight (its HAProxy
front soft-stops); the actuator finishes the drains it has begun and leaves
its replicas serving, recorded for the next actuator to adopt; the others
stop their loops. Stopping the fleet itself is `ebbflow down`'s job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Coroutine
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from ebbflow.actuator.local import LocalActuator
from ebbflow.actuator.replica import ActuatorMetrics
from ebbflow.collector.api import CollectorApi
from ebbflow.collector.membership import Membership
from ebbflow.collector.service import Collector, CollectorMetrics
from ebbflow.forecaster.api import ForecasterApi
from ebbflow.forecaster.service import Forecaster, ForecasterMetrics, collector_history
from ebbflow.router.front import HaproxyFront, haproxy_binary
from ebbflow.router.telemetry import RouterMetrics
from ebbflow.router.worker import RouterService, RouterWorkers, stop_router
from ebbflow.runtime import subjects, tracing
from ebbflow.runtime.bus import Bus, connect, export_link
from ebbflow.runtime.config import Config
from ebbflow.runtime.discovery import Announcer, instance_id, wait_for_service
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.grpc_server import GrpcServer
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.nats_auth import redact
from ebbflow.runtime.nats_server import NatsSupervisor
from ebbflow.runtime.process import free_port
from ebbflow.runtime.registry import RegistryView
from ebbflow.keda import externalscaler_pb2, externalscaler_pb2_grpc
from ebbflow.scheduler.api import PolicyApi, SchedulerApi, config_policies, import_policies
from ebbflow.scheduler.keda import KedaScaler
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
from ebbflow.scheduler.tenants_api import TenantApi
from ebbflow.status import LiveStatus, StatusService
from ebbflow.v1 import (
    collector_pb2,
    collector_pb2_grpc,
    discovery_pb2,
    forecast_pb2,
    forecast_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    scheduling_pb2,
    scheduling_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
)

log = logging.getLogger(__name__)

NATS_RETRY_S = 1.0
"""Between attempts to reach NATS at start."""
STOP_GRACE_S = 5.0
"""gRPC calls in flight at SIGTERM get this long to finish."""

AddServicer = Callable[[grpc.aio.Server], None]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host or "127.0.0.1", int(port or 0)


class ServiceHost:
    """The shell of one service: NATS, gRPC (health, reflection, status), /metrics, the announcement, the loops."""

    def __init__(
        self,
        service: str,
        config: Config,
        nats_url: str,
        state_dir: Path,
        grpc_listen: str,
        metrics_listen: str,
        say: Callable[[str], None] = lambda line: None,
        restarts: int = 0,
        last_exit: str = "",
    ) -> None:
        self.service = service
        self.config = config
        self.nats_url = nats_url
        self.state_dir = state_dir
        self.grpc_listen = grpc_listen
        self.metrics_listen = metrics_listen
        self.say = say
        self.registry = CollectorRegistry()
        self.stop_event = asyncio.Event()
        self.announcement = discovery_pb2.ServiceInstance(
            service=service, instance_id=instance_id(service), restarts=restarts, last_exit=last_exit
        )
        self.bus: Bus | None = None
        self.view: RegistryView | None = None
        self.live: LiveStatus | None = None
        self.server: GrpcServer | None = None
        self.metrics_server: WSGIServer | None = None
        self.pending_writes: Callable[[], int] = lambda: 0
        self.nats_server: NatsSupervisor | None = None
        """The nats-server this process runs itself, if any (the tests' in-process stack); `ebbflow up`'s is reported
        through its supervisor's announcement instead (status.StatusService)."""
        self._tasks: list[asyncio.Task[Any]] = []

    def spawn(self, name: str, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine, name=f"{self.service} {name}")

        def report(done: asyncio.Task[Any]) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error("%s %s stopped with an error", self.service, name, exc_info=done.exception())

        task.add_done_callback(report)
        self._tasks.append(task)

    async def connect(self) -> Bus:
        """Connect to NATS, waiting while it is not up yet (said once); then follow the registry."""
        told = False
        while True:
            try:
                self.bus = await connect(self.nats_url, name=f"ebbflow-{self.service}-{os.getpid()}", credentials=self.config.nats.credentials)
                break
            except UnavailableError as error:
                if not told:
                    log.warning("%s: %s; waiting for it", self.service, error)
                    self.say(f"{self.service}: waiting for NATS at {redact(self.nats_url)}")
                    told = True
                await asyncio.sleep(NATS_RETRY_S)
        if told:
            log.info("%s: NATS at %s is up", self.service, self.nats_url)
        export_link(self.bus.link, self.registry)
        self.view = RegistryView()
        self.spawn("registry view", self.view.run(self.bus, self.stop_event))
        self.live = LiveStatus(self.bus)
        self.spawn("status follower", self.live.run(self.stop_event))
        await self.view.wait_loaded(30)
        return self.bus

    async def serve(self, names: list[str], servicers: list[AddServicer], router_address: str = "") -> str:
        """Start the gRPC server (these services plus StatusService), /metrics and the announcement; the gRPC address."""
        assert self.bus is not None and self.view is not None and self.live is not None
        status_name = status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name
        self.server = server = GrpcServer([status_name, *names])
        status_pb2_grpc.add_StatusServiceServicer_to_server(StatusService(self.view, self.live, self.service, self.nats_status), server.server)
        for add in servicers:
            add(server.server)
        host, port = split_listen(self.grpc_listen)
        port = server.bind(host, port)
        await server.start()
        metrics_host, metrics_port = split_listen(self.metrics_listen)
        self.metrics_server, _ = start_http_server(metrics_port, addr=metrics_host, registry=self.registry)
        self.announcement.grpc_address = f"{host}:{port}"
        self.announcement.metrics_address = f"{metrics_host}:{self.metrics_server.server_port}"
        self.announcement.router_address = router_address
        announcer = Announcer(self.bus, self.announcement)
        await _quietly(announcer.put())  # at once, so whoever waits for us finds us now, not at the next beat
        self.spawn("announcer", announcer.run(self.stop_event))
        log.info("%s serving gRPC on %s, metrics on %s", self.service, self.announcement.grpc_address, self.announcement.metrics_address)
        return self.announcement.grpc_address

    def nats_status(self) -> status_pb2.NatsStatus:
        assert self.bus is not None
        link, server = self.bus.link, self.nats_server
        return status_pb2.NatsStatus(
            url=link.url, connected=link.connected, since_unix_s=link.since_unix_s, reconnects=link.reconnects,
            pending_writes=self.pending_writes(), supervised=server is not None,
            server_restarts=server.restarts if server else 0,
            last_server_exit=server.last_exit if server else "",
            last_server_exit_unix_s=server.last_exit_unix_s if server else 0.0,
        )

    async def stop_serving(self) -> None:
        """Say NOT_SERVING, let calls in flight finish, stop the loops (the announcement is withdrawn)."""
        self.stop_event.set()
        if self.server is not None:
            await self.server.stop(grace_s=STOP_GRACE_S)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()


async def _quietly(step: Coroutine[Any, Any, Any]) -> None:
    try:
        await step
    except Exception as error:
        log.debug("%s", error)


def _names(*modules: Any) -> list[str]:
    return [service.full_name for module in modules for service in module.DESCRIPTOR.services_by_name.values()]


# ---- the five services ---------------------------------------------------------------------------------------


class ActuatorUnit:
    """The local actuator: its replicas, the repository's model configs and the config file's policies."""

    service = "actuator"

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self.actuator: LocalActuator | None = None

    async def start(self) -> None:
        host, config = self.host, self.host.config
        bus = await host.connect()
        self.actuator = actuator = LocalActuator(config.actuator, bus, host.state_dir, ActuatorMetrics(host.registry), host.say, config.placement)
        # Only models the repository serves; a pin set at run time outlives a restart.
        await import_policies(bus, await config_policies(bus, config.models, set(actuator.model_configs)))
        await actuator.adopt_previous_run()
        await actuator.publish_model_configs()
        host.pending_writes = lambda: actuator.writer.landing.backlog
        host.spawn("reconcile", actuator.run(host.stop_event))
        host.spawn("crash loops", self._publish_crash_loops(actuator))
        await host.serve([], [])

    async def _publish_crash_loops(self, actuator: LocalActuator) -> None:
        """Each model's crash loop on NATS every reconcile tick, for whichever service answers `ebbflow status`."""
        assert self.host.bus is not None
        while not self.host.stop_event.is_set():
            report = status_pb2.CrashLoops(models=actuator.crash_loops())
            await _quietly(self.host.bus.nc.publish(subjects.CRASH_LOOPS, report.SerializeToString()))
            await wait_any(self.host.config.actuator.reconcile_interval_s, self.host.stop_event)

    async def stop(self, stop_replicas: bool) -> None:
        """With stop_replicas (the in-process stack's stop) every replica stops; without (SIGTERM of the service),
        the drains begun finish and the replicas keep serving for the next actuator to adopt."""
        await self.host.stop_serving()
        actuator, bus = self.actuator, self.host.bus
        if actuator is not None:
            if stop_replicas:
                models = sorted(actuator.desired)
                await actuator.shutdown()
                if bus is not None:
                    await forget_desired(bus, models)
            else:
                await actuator.release()
        await self.host.close()


class CollectorUnit:
    """A collector sharing the models with the other live collectors (collector/shards.py), under its announced id."""

    service = "collector"

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self.collector: Collector | None = None

    async def start(self) -> None:
        host = self.host
        bus = await host.connect()
        assert host.view is not None
        membership = Membership(host.announcement.instance_id)
        self.collector = collector = Collector(host.config.collector, bus, host.view, CollectorMetrics(host.registry), membership)
        host.spawn("scrape", collector.run(host.stop_event))
        # Announced once its history is back: the forecaster refills from it as soon as it finds it.
        await wait_any(60.0, collector.restored, host.stop_event)
        await host.serve(_names(collector_pb2), [lambda server: collector_pb2_grpc.add_CollectorServiceServicer_to_server(CollectorApi(collector), server)])

    async def stop(self) -> None:
        await self.host.stop_serving()
        await self.host.close()


class ForecasterUnit:
    service = "forecaster"

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self.forecaster: Forecaster | None = None

    async def start(self) -> None:
        host = self.host
        bus = await host.connect()
        view = host.view
        assert view is not None
        # The history comes over the collector's public API, from whichever collector is announced when it is asked.
        self.forecaster = forecaster = Forecaster(
            host.config.forecaster, bus, collector_history(self._collector_address), ForecasterMetrics(host.registry),
            lambda: set(view.policies) | view.known_models(),
        )
        await host.serve(_names(forecast_pb2), [lambda server: forecast_pb2_grpc.add_ForecasterServiceServicer_to_server(ForecasterApi(forecaster), server)])
        host.spawn("forecast", self._run(forecaster))

    async def _collector_address(self) -> str:
        assert self.host.bus is not None
        found = await wait_for_service(self.host.bus, "collector", self.host.stop_event)
        if found is None:
            raise UnavailableError("stopping before a collector announced itself")
        return found.grpc_address

    async def _run(self, forecaster: Forecaster) -> None:
        await self._collector_address()  # its history is what the forecaster refills from
        if not self.host.stop_event.is_set():
            await forecaster.run(self.host.stop_event)

    async def stop(self) -> None:
        await self.host.stop_serving()
        await self.host.close()


class SchedulerUnit:
    service = "scheduler"

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self.scheduler: Scheduler | None = None

    async def start(self) -> None:
        host, config = self.host, self.host.config
        bus = await host.connect()
        view = host.view
        assert view is not None
        self.scheduler = scheduler = Scheduler(
            config.scheduler, bus, view, SchedulerMetrics(host.registry), time_scale=config.actuator.time_scale, placement=config.placement,
        )
        host.spawn("decide", scheduler.run(host.stop_event))
        await host.serve(
            _names(policy_pb2, scheduling_pb2, tenant_pb2, externalscaler_pb2),
            [
                lambda server: policy_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyApi(bus, view, config.scheduler.admin_token), server),
                lambda server: scheduling_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerApi(bus, view, scheduler), server),
                lambda server: tenant_pb2_grpc.add_TenantServiceServicer_to_server(TenantApi(bus, config.scheduler.admin_token), server),
                lambda server: externalscaler_pb2_grpc.add_ExternalScalerServicer_to_server(KedaScaler(bus, view, scheduler, host.stop_event), server),
            ],
        )

    async def stop(self) -> None:
        await self.host.stop_serving()
        await self.host.close()


class RouterUnit:
    """The Python router (or its worker processes) and, where HAProxy is installed, the front before it."""

    service = "router"

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self.router: RouterService | None = None
        self.workers: RouterWorkers | None = None
        self.front: HaproxyFront | None = None
        self.address = ""
        self.http_address = ""

    async def start(self) -> str:
        host, config = self.host, self.host.config
        bus = await host.connect()
        view = host.view
        assert view is not None
        router_config = config.router
        # auto: the front wherever haproxy is installed, unless spans are wanted for every request (the fast path has none)
        use_front = router_config.front == "haproxy" or (router_config.front == "auto" and not router_config.tracing and haproxy_binary() is not None)
        if use_front:  # the Python router serves HAProxy's fallback on private ports (plaintext: the front ends TLS)
            router_config = replace(
                router_config, host="127.0.0.1", port=0, http_port=0 if router_config.http_port >= 0 else -1,
                tls_cert_file="", tls_key_file="", tls_client_ca_file="",
            )  # fmt: skip
        router_metrics = None
        if router_config.workers == 1:
            self.router = RouterService(router_config, bus, view, host.registry)
            router_metrics = self.router.router.metrics
            router_port = await self.router.start()
            http_port = self.router.http_port
        else:
            router_port = router_config.port or free_port(router_config.host)
            http_port = router_config.http_port if router_config.http_port != 0 else free_port(router_config.host)
            metrics_dir = host.state_dir / "router-metrics"
            self.workers = RouterWorkers(replace(router_config, port=router_port, http_port=http_port), host.nats_url, host.state_dir, metrics_dir)
            await self.workers.start()
            MultiProcessCollector(host.registry, path=str(metrics_dir))
            http_port = http_port if http_port >= 0 else None
        self.address = f"{router_config.host}:{router_port}"
        self.http_address = f"{router_config.host}:{http_port}" if http_port is not None else ""
        if use_front:
            # With worker processes, /metrics carries their merged families; a second copy of the same names from
            # this process would make the exposition ambiguous, so the front's then stay out of it (its telemetry
            # still reaches the collector).
            self.front = HaproxyFront(
                config.router, bus, view, self.address, host.state_dir, router_metrics or RouterMetrics(CollectorRegistry()),
                http_fallback=self.http_address,
            )
            fallback = self.address
            self.address = f"{config.router.host}:{await self.front.start()}"
            self.http_address = self.front.http_listen
            host.say(f"haproxy front on {self.address} forwards inference itself; the Python router behind it is on {fallback}")
            host.spawn("haproxy front", self.front.run(host.stop_event))
        if self.http_address:
            host.say(f"KServe v2 HTTP (tritonclient.http, curl) on http://{self.http_address}/v2")
        await host.serve([], [], router_address=self.address)
        return self.address

    async def stop(self) -> None:
        """The front first (HAProxy's soft stop: calls in flight finish), the Python router serving what it hands
        over until then, all within router.drain_timeout_s (router/worker.py:stop_router)."""
        await stop_router(self.front, self.router, self.workers, drain=True)
        await self.host.stop_serving()
        await self.host.close()


async def forget_desired(bus: Bus, models: list[str]) -> None:
    """Delete the desired state of each model of a fleet that was stopped.

    The count described a fleet that no longer runs, and a later start that read
    it would bring back the old fleet at once, every replica a cold start, and
    hold it for a full scale-down delay whatever the load is then. The next start
    begins each model at its policy's floor (the initial decision) and scales
    from load. A crash or SIGKILL skips this on purpose: the next start then
    restores the desired counts (the scheduler holds them for the scale-down
    delay), since the load they were sized for may well still be there.
    """
    if not bus.nc.is_connected:
        log.warning("NATS unavailable at stop: the desired counts stay and the next start restores them")
        return
    for model in models:
        try:
            await bus.desired.delete(model)
        except Exception as error:  # NATS away: the next start restores the count, as after a crash
            log.warning("forgetting the desired state of %s at stop failed: %s", model, error)
    if models:
        log.info("clean stop: desired state of %s forgotten; the next start begins at min_replicas", ", ".join(models))


UNITS = {"router": RouterUnit, "collector": CollectorUnit, "forecaster": ForecasterUnit, "scheduler": SchedulerUnit, "actuator": ActuatorUnit}


def listen_addresses(config: Config, service: str) -> tuple[str, str]:
    """The service's gRPC and /metrics listen addresses from its config section."""
    section = getattr(config, service)
    return section.grpc_listen, section.metrics_listen


# ---- `ebbflow serve SERVICE` -----------------------------------------------------------------------------------


async def run_service(service: str, config: Config, nats_url: str, state_dir: Path) -> int:
    """Run one service until SIGTERM or SIGINT; the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    grpc_listen, metrics_listen = listen_addresses(config, service)
    host = ServiceHost(
        service, config, nats_url, state_dir, grpc_listen, metrics_listen, say=lambda line: log.info("%s", line),
        restarts=int(os.environ.get("EBBFLOW_RESTARTS", "0") or 0), last_exit=os.environ.get("EBBFLOW_LAST_EXIT", ""),
    )
    unit = UNITS[service](host)
    starting = asyncio.ensure_future(unit.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    try:
        if starting.done():
            starting.result()  # a failed start raises here
            log.info("%s ready (pid %d)", service, os.getpid())
            _ready_file()
            await stop.wait()
        else:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        log.info("%s stopping", service)
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        if isinstance(unit, ActuatorUnit):
            await unit.stop(stop_replicas=False)
        else:
            await unit.stop()
        stopping.cancel()
        log.info("%s stopped", service)


def _ready_file() -> None:
    """Tell the supervisor this service is serving (EBBFLOW_READY_FILE, when it gave one)."""
    path = os.environ.get("EBBFLOW_READY_FILE")
    if path:
        Path(path).write_text(str(time.time()))


def serve(service: str, config: Config, nats_url: str, state_dir: Path, verbose: bool) -> int:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr, format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    tracing.setup(service)  # the OTEL_* variables decide; off when none is set
    if service == "router":
        import uvloop

        return uvloop.run(run_service(service, config, nats_url, state_dir))  # libuv's loop: less CPU per proxied call
    return asyncio.run(run_service(service, config, nats_url, state_dir))
