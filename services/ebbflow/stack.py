"""The five services composed in one process, for tests: the same units `ebbflow serve` runs (serve.py).

Each service keeps its own host (NATS connection, gRPC server, /metrics,
announcement) exactly as in its own process; they share nothing but NATS and
gRPC. `ebbflow up` runs each as a separate process instead (up.py); this
composition is how the integration tests reach inside a service (the
actuator's replicas, the collector's latest snapshots) while the services
talk as they do in production.

Start order doesn't matter for correctness (everything watches KV and waits
for what it needs), but this order makes the first request succeed soonest.
Stop order: the router first (its front finishes the calls in flight), then
the control plane, then the actuator, which stops its replicas, and then the
desired counts are forgotten.
A clean stop forgets each model's desired count once its replicas have
stopped (serve.forget_desired says why).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ebbflow.actuator.local import LocalActuator
from ebbflow.collector.service import Collector
from ebbflow.forecaster.service import Forecaster
from ebbflow.router.front import HaproxyFront
from ebbflow.router.worker import RouterService, RouterWorkers
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import Config
from ebbflow.runtime.nats_server import NatsSupervisor
from ebbflow.runtime.registry import RegistryView
from ebbflow.scheduler.service import Scheduler
from ebbflow.serve import ActuatorUnit, CollectorUnit, ForecasterUnit, RouterUnit, SchedulerUnit, ServiceHost, listen_addresses

@dataclass(frozen=True)
class Addresses:
    router: str
    control: str
    """The scheduler's gRPC address (policy, scheduling and status APIs)."""
    metrics: str
    """The scheduler's /metrics."""
    collector: str = ""
    forecaster: str = ""
    actuator: str = ""
    router_control: str = ""


class Stack:
    def __init__(
        self, config: Config, nats_url: str, state_dir: Path, say: Callable[[str], None] = lambda line: None, nats_server: NatsSupervisor | None = None
    ) -> None:
        self.config = config
        self.nats_url = nats_url
        self.nats_server = nats_server
        """The nats-server the test runs and restarts (None: an external NATS)."""
        self.state_dir = state_dir
        self.say = say

        def host(service: str) -> ServiceHost:
            grpc_listen, metrics_listen = listen_addresses(config, service)
            return ServiceHost(service, config, nats_url, state_dir, grpc_listen, metrics_listen, say)

        self.actuator_unit = ActuatorUnit(host("actuator"))
        self.collector_unit = CollectorUnit(host("collector"))
        self.scheduler_unit = SchedulerUnit(host("scheduler"))
        self.router_unit = RouterUnit(host("router"))
        self.forecaster_unit = ForecasterUnit(host("forecaster"))
        self._units = (self.actuator_unit, self.collector_unit, self.scheduler_unit, self.router_unit, self.forecaster_unit)
        for unit in self._units:
            unit.host.nats_server = nats_server  # status says how often the test restarted it
        self.addresses: Addresses | None = None
        self.stopped = False
        self._started: list[object] = []

    # What tests reach into, each inside its own service.
    @property
    def bus(self) -> Bus | None:
        return self.actuator_unit.host.bus

    @property
    def view(self) -> RegistryView:
        view = self.router_unit.host.view or self.actuator_unit.host.view
        assert view is not None
        return view

    @property
    def actuator(self) -> LocalActuator | None:
        return self.actuator_unit.actuator

    @property
    def collector(self) -> Collector:
        assert self.collector_unit.collector is not None
        return self.collector_unit.collector

    @property
    def scheduler(self) -> Scheduler:
        assert self.scheduler_unit.scheduler is not None
        return self.scheduler_unit.scheduler

    @property
    def forecaster(self) -> Forecaster:
        assert self.forecaster_unit.forecaster is not None
        return self.forecaster_unit.forecaster

    @property
    def router(self) -> RouterService | None:
        return self.router_unit.router

    @property
    def router_workers(self) -> RouterWorkers | None:
        return self.router_unit.workers

    @property
    def front(self) -> HaproxyFront | None:
        return self.router_unit.front

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A metric's value from whichever service's /metrics registry has it."""
        for unit in self._units:
            value = unit.host.registry.get_sample_value(name, labels or {})
            if value is not None:
                return value
        return None

    async def start(self) -> Addresses:
        """Bring every service up; the addresses are also kept on `self.addresses`."""
        for unit in self._units:
            await unit.start()
            self._started.append(unit)
        hosts = {unit.service: unit.host.announcement for unit in self._units}
        self.addresses = Addresses(
            router=self.router_unit.address,
            control=hosts["scheduler"].grpc_address,
            metrics=hosts["scheduler"].metrics_address,
            collector=hosts["collector"].grpc_address,
            forecaster=hosts["forecaster"].grpc_address,
            actuator=hosts["actuator"].grpc_address,
            router_control=hosts["router"].grpc_address,
        )
        return self.addresses

    async def wait_serving(self, models: list[str], timeout_s: float) -> None:
        """Return once the router sees a ready replica of each model."""
        async def all_ready() -> None:
            while not all(self.view.ready(m) for m in models):
                await self.view.wait_changed(0.5)

        await asyncio.wait_for(all_ready(), timeout_s)

    async def stop(self) -> None:
        self.stopped = True
        for unit in (self.router_unit, self.forecaster_unit, self.scheduler_unit, self.collector_unit):
            if unit in self._started:
                await unit.stop()
        await self.actuator_unit.stop(stop_replicas=True)  # also after a failed start: it stops what did start
