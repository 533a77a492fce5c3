"""The services of one control plane, composed in one process: what `ebbflow up` runs.

Start order doesn't matter for correctness (everything watches KV), but this
order makes the first request succeed soonest. Stop order follows the house
style: health NOT_SERVING, stop gRPC with a grace period, cancel loops, stop
replicas, forget the desired counts, drain NATS.

A clean stop forgets each model's desired count once its replicas have
stopped: the count described a fleet that no longer runs, and a later start
that read it would bring back the old fleet at once, every replica a cold
start, and hold it for a full scale-down delay whatever the load is then.
The next start begins each model at its policy's floor (the initial decision)
and scales from load. A crash or SIGKILL skips this on purpose: the next start
then restores the desired counts (the scheduler holds them for the
scale-down delay), since the load they were sized for may well still be there.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Coroutine
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from ebbflow.actuator.local import LocalActuator
from ebbflow.actuator.replica import ActuatorMetrics
from ebbflow.collector.api import CollectorApi
from ebbflow.collector.service import Collector, CollectorMetrics
from ebbflow.forecaster.api import ForecasterApi
from ebbflow.forecaster.service import Forecaster, ForecasterMetrics, collector_history
from ebbflow.router.front import HaproxyFront, haproxy_binary
from ebbflow.router.telemetry import RouterMetrics
from ebbflow.router.worker import RouterService, RouterWorkers
from ebbflow.runtime.bus import Bus, connect, export_link
from ebbflow.runtime.config import Config
from ebbflow.runtime.grpc_server import GrpcServer
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.nats_server import NatsSupervisor
from ebbflow.runtime.process import free_port
from ebbflow.runtime.registry import RegistryView
from ebbflow.scheduler.api import PolicyApi, SchedulerApi, config_policies, import_policies
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
from ebbflow.status import StatusService
from ebbflow.v1 import collector_pb2, collector_pb2_grpc, forecast_pb2, forecast_pb2_grpc, policy_pb2, policy_pb2_grpc, scheduling_pb2, scheduling_pb2_grpc, status_pb2, status_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Addresses:
    router: str
    control: str
    metrics: str


class Stack:
    def __init__(
        self, config: Config, nats_url: str, state_dir: Path, say: Callable[[str], None] = lambda line: None, nats_server: NatsSupervisor | None = None
    ) -> None:
        self.config = config
        self.nats_url = nats_url
        self.nats_server = nats_server
        """The nats-server `ebbflow up` runs and restarts, for `ebbflow status` (None: an external NATS)."""
        self.state_dir = state_dir
        self.say = say
        self.metrics_registry = CollectorRegistry()
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        # Set as start() brings each part up, so stop() after a failed start stops only what runs.
        self.bus: Bus | None = None
        self.actuator: LocalActuator | None = None
        self.router: RouterService | None = None
        self.router_workers: RouterWorkers | None = None
        self.front: HaproxyFront | None = None
        self.control_server: GrpcServer | None = None
        self.metrics_server: WSGIServer | None = None
        self.addresses: Addresses | None = None

    def _spawn(self, name: str, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine, name=name)

        def report(done: asyncio.Task[Any]) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error("%s stopped with an error", name, exc_info=done.exception())

        task.add_done_callback(report)
        self._tasks.append(task)

    async def start(self) -> Addresses:
        """Bring every part up; the addresses are also kept on `self.addresses`."""
        self.bus = bus = await connect(self.nats_url, name="ebbflow")
        export_link(bus.link, self.metrics_registry)
        self.actuator = actuator = LocalActuator(
            self.config.actuator, bus, self.state_dir, ActuatorMetrics(self.metrics_registry), self.say, self.config.placement
        )
        # Only models the repository serves; a pin set at run time outlives a restart.
        await import_policies(bus, await config_policies(bus, self.config.models, set(actuator.model_configs)))
        await actuator.forget_previous_run()
        await actuator.publish_model_configs()
        self.view = RegistryView()
        self._spawn("registry view", self.view.run(bus, self.stop_event))
        await self.view.wait_loaded(10)

        self._spawn("actuator", actuator.run(self.stop_event))
        self.collector = Collector(self.config.collector, bus, self.view, CollectorMetrics(self.metrics_registry))
        self._spawn("collector", self.collector.run(self.stop_event))
        self.scheduler = Scheduler(
            self.config.scheduler, bus, self.view, SchedulerMetrics(self.metrics_registry), time_scale=self.config.actuator.time_scale,
            placement=self.config.placement,
        )
        self._spawn("scheduler", self.scheduler.run(self.stop_event))

        router_config = self.config.router
        # auto: the front wherever haproxy is installed, unless spans are wanted for every request (the fast path has none)
        use_front = router_config.front == "haproxy" or (
            router_config.front == "auto" and not router_config.tracing and haproxy_binary() is not None
        )
        if use_front:  # the Python router serves HAProxy's fallback on a private port
            router_config = replace(router_config, host="127.0.0.1", port=0)
        router_metrics = None
        if router_config.workers == 1:
            self.router = RouterService(router_config, bus, self.view, self.metrics_registry)
            router_metrics = self.router.router.metrics
            router_port = await self.router.start()
        else:
            router_port = router_config.port or free_port(router_config.host)
            metrics_dir = self.state_dir / "router-metrics"
            self.router_workers = RouterWorkers(replace(router_config, port=router_port), self.nats_url, self.state_dir, metrics_dir)
            await self.router_workers.start()
            MultiProcessCollector(self.metrics_registry, path=str(metrics_dir))
        router_address = f"{router_config.host}:{router_port}"
        if use_front:
            # With worker processes, /metrics carries their merged families; a second copy of the same names from
            # this process would make the exposition ambiguous, so the front's then stay out of it (its telemetry
            # still reaches the collector).
            self.front = HaproxyFront(
                self.config.router, bus, self.view, router_address, self.state_dir, router_metrics or RouterMetrics(CollectorRegistry())
            )
            fallback = router_address
            router_address = f"{self.config.router.host}:{await self.front.start()}"
            self.say(f"haproxy front on {router_address} forwards inference itself; the Python router behind it is on {fallback}")
            self._spawn("haproxy front", self.front.run(self.stop_event))

        view = self.view
        self.forecaster = forecaster = Forecaster(
            self.config.forecaster, bus, None, ForecasterMetrics(self.metrics_registry), lambda: set(view.policies) | view.known_models()
        )
        self.control_server = control_server = GrpcServer(
            [
                status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name,
                collector_pb2.DESCRIPTOR.services_by_name["CollectorService"].full_name,
                forecast_pb2.DESCRIPTOR.services_by_name["ForecasterService"].full_name,
                policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
                scheduling_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name,
            ]
        )
        status_pb2_grpc.add_StatusServiceServicer_to_server(
            StatusService(
                self.view, actuator.desired, self.collector.latest, router_address, forecaster.latest, actuator.crash_loops, self.nats_status
            ),
            control_server.server,
        )
        collector_pb2_grpc.add_CollectorServiceServicer_to_server(CollectorApi(self.collector), control_server.server)
        forecast_pb2_grpc.add_ForecasterServiceServicer_to_server(ForecasterApi(forecaster), control_server.server)
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyApi(bus, self.view, self.config.scheduler.admin_token), control_server.server)
        scheduling_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerApi(bus, self.view, self.scheduler), control_server.server)
        control_port = control_server.bind("127.0.0.1", 0)
        await control_server.start()
        # The forecaster refills through the collector's public API, as it would from another host.
        forecaster.history = collector_history(f"127.0.0.1:{control_port}")
        self._spawn("forecaster", self._run_forecaster(forecaster))
        self.metrics_server, _ = start_http_server(0, addr="127.0.0.1", registry=self.metrics_registry)
        self.addresses = Addresses(router_address, f"127.0.0.1:{control_port}", f"127.0.0.1:{self.metrics_server.server_port}")
        return self.addresses

    def nats_status(self) -> status_pb2.NatsStatus:
        """This process's NATS connection, the supervised server's restarts, and the registry writes waiting for NATS."""
        assert self.bus is not None
        link, server = self.bus.link, self.nats_server
        return status_pb2.NatsStatus(
            url=link.url,
            connected=link.connected,
            since_unix_s=link.since_unix_s,
            reconnects=link.reconnects,
            supervised=server is not None,
            server_restarts=server.restarts if server else 0,
            last_server_exit=server.last_exit if server else "",
            last_server_exit_unix_s=server.last_exit_unix_s if server else 0.0,
            pending_writes=self.actuator.writer.landing.backlog if self.actuator else 0,
        )

    async def _run_forecaster(self, forecaster: Forecaster) -> None:
        await wait_any(60.0, self.collector.restored, self.stop_event)  # its history is what the forecaster refills from
        if not self.stop_event.is_set():
            await forecaster.run(self.stop_event)

    async def wait_serving(self, models: list[str], timeout_s: float) -> None:
        """Return once the router sees a ready replica of each model."""
        async def all_ready() -> None:
            while not all(self.view.ready(m) for m in models):
                await self.view.wait_changed(0.5)

        await asyncio.wait_for(all_ready(), timeout_s)

    async def stop(self) -> None:
        self.stop_event.set()
        if self.front is not None:
            await self.front.stop()
        if self.router is not None:
            await self.router.stop(grace_s=5.0)
        if self.router_workers is not None:
            await self.router_workers.stop()
        if self.control_server is not None:
            await self.control_server.stop(grace_s=1.0)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.actuator is not None:
            await self.actuator.shutdown()
            if self.bus is not None:
                await self._forget_desired(self.bus, sorted(self.actuator.desired))
        if self.bus is not None:
            await self.bus.close()

    async def _forget_desired(self, bus: Bus, models: list[str]) -> None:
        """Delete the desired state of each model this stack carried out (see the module docstring)."""
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
