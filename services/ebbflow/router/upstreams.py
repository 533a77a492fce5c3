"""The replicas one router forwards to: kept in step with the registry, picked per request, told when drained.

`Upstreams.sync` makes the table match the registry view (a channel per
ready or draining replica, the ready ones grouped by model); the follower
calls it on every registry change, so the request path does no registry work.
`pick` is the pure `pick_replica` over that table, with the ejector leaving
out replicas that keep failing.

docs/architecture.md "Drain": when a replica turns DRAINING, this router stops sending
it new requests and acknowledges with how many of its own are still in
flight there; it acknowledges again once that count reaches zero, which is
what the actuator waits for before stopping the replica.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable

import grpc

from ebbflow.router.core import SERVICE, Candidate, Ejector, Routing, pick_replica
from ebbflow.router.telemetry import RouterMetrics
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.policy import routing_from_proto
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.registry import RegistryView
from ebbflow.runtime.wire import DRAINING, READY, address
from ebbflow.v1 import load_pb2, registry_pb2


@dataclass
class Upstream:
    """One replica as this router uses it: a channel, cached callables and its own in-flight count."""

    key: str
    entry: registry_pb2.ReplicaEntry
    channel: grpc.aio.Channel
    metrics: RouterMetrics
    in_flight: int = 0
    acked_in_flight: int | None = None
    """None until this router acknowledged the replica's drain; then what was in flight at the last acknowledgement."""
    _calls: dict[str, Any] = field(default_factory=dict)
    _codes: dict[grpc.StatusCode, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.in_flight_gauge = self.metrics.upstream_in_flight.labels(self.entry.model, self.entry.replica_id)
        self.latency = self.metrics.upstream_latency.labels(self.entry.model, self.entry.replica_id)

    @property
    def address(self) -> str:
        return address(self.entry)

    def unary(self, method: str) -> Any:
        call = self._calls.get(method)
        if call is None:
            call = self._calls[method] = self.channel.unary_unary(f"/{SERVICE}/{method}")
        return call

    def stream(self) -> Any:
        return self.channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")

    def begin(self) -> None:
        self.in_flight += 1
        self.in_flight_gauge.inc()

    def end(self, code: grpc.StatusCode, seconds: float) -> None:
        self.in_flight -= 1
        self.in_flight_gauge.dec()
        self.latency.observe(seconds)
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.metrics.upstream.labels(self.entry.model, self.entry.replica_id, code.name)
        child.inc()


class Upstreams:
    """Every ready or draining replica of the registry, by key, and the ready ones by model."""

    def __init__(self, config: RouterConfig, bus: Bus, view: RegistryView, metrics: RouterMetrics, router_id: str) -> None:
        self.config = config
        self.bus = bus
        self.view = view
        self.metrics = metrics
        self.router_id = router_id
        self.by_key: dict[str, Upstream] = {}
        self.ready: dict[str, list[Upstream]] = {}
        """Each model's READY replicas: what `pick` chooses from."""
        self.ejector = Ejector(config.eject_after_failures, config.eject_s)
        self._routing: dict[str, Routing] = {}
        self._pending: dict[str, float] = {}
        self._counter = itertools.count()
        self._random = random.Random()
        self._background: set[asyncio.Task[Any]] = set()

    # ---- following the registry ----------------------------------------------

    def sync(self) -> None:
        """Make the table and routing policies match the view; acknowledge drains."""
        self._routing = {model: Routing(routing_from_proto(policy.routing)) for model, policy in self.view.policies.items()}
        alive = {key: entry for key, entry in self.view.replicas.items() if entry.state in (READY, DRAINING)}
        for key, upstream in list(self.by_key.items()):
            entry = alive.get(key)
            if entry is None or upstream.address != address(entry):
                del self.by_key[key]
                self._later(upstream.channel.close())
        ready: dict[str, list[Upstream]] = {}
        for key, entry in alive.items():
            upstream = self.by_key.get(key)
            if upstream is None:
                upstream = self.by_key[key] = Upstream(key, entry, self._open_channel(entry), self.metrics)
            upstream.entry = entry
            if entry.state == READY:
                ready.setdefault(entry.model, []).append(upstream)
            elif upstream.acked_in_flight is None:
                self._acknowledge_drain(upstream)
        self.ready = ready
        self.ejector.forget(set(alive))

    def _open_channel(self, entry: registry_pb2.ReplicaEntry) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            address(entry),
            options=[
                ("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.max_send_message_length", self.config.max_message_bytes),
            ],
        )

    def _acknowledge_drain(self, upstream: Upstream) -> None:
        """docs/architecture.md "Drain": this worker sends no new requests there; say how many of its own still run."""
        upstream.acked_in_flight = upstream.in_flight
        ack = registry_pb2.DrainAck(
            router_id=self.router_id, model=upstream.entry.model, replica_id=upstream.entry.replica_id, in_flight=upstream.in_flight
        )
        self._later(self.bus.nc.publish(subjects.drain_ack_subject(upstream.entry.model, upstream.entry.replica_id), ack.SerializeToString()))

    def _later(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def on_load(self, snapshot: load_pb2.LoadSnapshot) -> None:
        """Triton's pending count per replica from the collector: a tie-breaker, never the main signal."""
        for replica in snapshot.replicas:
            self._pending[subjects.replica_key(snapshot.model, replica.replica_id)] = replica.pending_requests

    # ---- using them -------------------------------------------------------------

    def pick(self, model: str, avoid: set[str] | frozenset[str] = frozenset()) -> Upstream | None:
        ready = self.ready.get(model)
        if not ready:
            return None
        if len(ready) == 1:  # the common small-fleet case needs no scoring
            only = ready[0]
            return None if only.key in avoid else only
        by_key = {u.key: u for u in ready if u.key not in avoid}
        if not by_key:
            return None
        now = time.monotonic()
        candidates = self.ejector.usable([Candidate(k, u.in_flight, self._pending.get(k, 0.0)) for k, u in by_key.items()], now)
        routing = self._routing.get(model, Routing.LEAST_OUTSTANDING)
        draw = self._random.getrandbits(32) if routing is Routing.POWER_OF_TWO else next(self._counter)
        chosen = pick_replica(candidates, draw, routing)
        return by_key[chosen.key] if chosen else None

    def finished(self, upstream: Upstream, code: grpc.StatusCode, seconds: float) -> None:
        """A call on `upstream` ended; a draining replica hears once this router has nothing left there."""
        upstream.end(code, seconds)
        if upstream.acked_in_flight and upstream.in_flight == 0:
            self._acknowledge_drain(upstream)

    async def close(self) -> None:
        for upstream in self.by_key.values():
            await upstream.channel.close()
        self.by_key.clear()
        self.ready.clear()
        for task in list(self._background):
            task.cancel()
