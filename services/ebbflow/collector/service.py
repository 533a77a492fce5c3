"""The collector's shell: scrape ready replicas, merge router telemetry, publish LoadSnapshots."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Gauge

from ebbflow.collector.core import ReplicaRates, RouterWindow, Scrape, is_stale, merge_router_windows, parse_metrics, replica_rates
from ebbflow.router.core import LATENCY_BUCKETS_S, histogram_quantile
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus, unsubscribe
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.config import CollectorConfig
from ebbflow.runtime.registry import READY, RegistryView
from ebbflow.v1 import load_pb2, registry_pb2

log = logging.getLogger(__name__)

FRESH = load_pb2.DATA_STATUS_FRESH
STALE = load_pb2.DATA_STATUS_STALE
UNKNOWN = load_pb2.DATA_STATUS_UNKNOWN


@dataclass
class ReplicaTrack:
    """Scrape history of one replica: the last two successful scrapes and the rates between them."""

    previous: Scrape | None = None
    current: Scrape | None = None
    rates: ReplicaRates | None = None


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.scrape_errors = Counter("ebbflow_collector_scrape_errors", "Failed /metrics scrapes", ["model", "replica"], registry=registry)
        self.arrival_rps = Gauge("ebbflow_model_arrival_rps", "Requests offered per second (demand)", ["model"], registry=registry)
        self.in_flight = Gauge("ebbflow_model_in_flight", "Time-averaged in-flight requests at the routers", ["model"], registry=registry)
        self.ready_replicas = Gauge("ebbflow_model_ready_replicas", "Ready replicas", ["model"], registry=registry)
        self.fresh = Gauge("ebbflow_model_load_fresh", "1 when the model's load data is fresh, else 0", ["model"], registry=registry)


class Collector:
    def __init__(self, config: CollectorConfig, bus: Bus, view: RegistryView, metrics: CollectorMetrics) -> None:
        self.config = config
        self.bus = bus
        self.view = view
        self.metrics = metrics
        self._windows: dict[str, dict[str, RouterWindow]] = {}
        self._tracks: dict[str, ReplicaTrack] = {}
        self.latest: dict[str, load_pb2.LoadSnapshot] = {}

    async def _on_telemetry(self, msg) -> None:  # type: ignore[no-untyped-def]
        try:
            telemetry = load_pb2.RouterTelemetry.FromString(msg.data)
        except DecodeError:
            log.warning("ignoring undecodable router telemetry")
            return
        now = time.monotonic()
        for model in telemetry.models:
            self._windows.setdefault(model.model, {})[telemetry.router_id] = RouterWindow(
                router_id=telemetry.router_id,
                received_s=now,
                window_s=telemetry.window_s,
                arrivals=model.arrivals,
                in_flight_avg=model.in_flight_avg,
                latency_counts=tuple(model.latency.counts),
                latency_sum_s=model.latency.sum_s,
            )

    async def _scrape(self, session: aiohttp.ClientSession, key: str, replica: registry_pb2.ReplicaEntry) -> None:
        url = f"http://{replica.host}:{replica.metrics_port}/metrics"
        try:
            async with session.get(url) as response:
                response.raise_for_status()
                text = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            self.metrics.scrape_errors.labels(replica.model, replica.replica_id).inc()
            log.debug("scrape of %s failed: %s", url, error)
            return
        track = self._tracks.setdefault(key, ReplicaTrack())
        track.previous, track.current = track.current, Scrape(time.monotonic(), parse_metrics(text, replica.model))
        if track.previous is not None:
            track.rates = replica_rates(track.previous, track.current) or track.rates

    def snapshot(self, model: str, now: float, wall: float) -> load_pb2.LoadSnapshot:
        merged = merge_router_windows(model, self._windows.get(model, {}).values(), now, self.config.stale_after_s)
        ready = self.view.ready(model)
        replicas = []
        for entry in ready:
            track = self._tracks.get(subjects.replica_key(entry.model, entry.replica_id), ReplicaTrack())
            last = track.current.time_s if track.current else None
            rates = track.rates or ReplicaRates(0.0, 0.0, 0.0, 0.0, 0.0)
            replicas.append(
                load_pb2.ReplicaLoad(
                    replica_id=entry.replica_id,
                    address=f"{entry.host}:{entry.grpc_port}",
                    status=STALE if is_stale(last, now, self.config.stale_after_s) or track.rates is None else FRESH,
                    in_system=rates.in_system,
                    queued=rates.queued,
                    pending_requests=rates.pending_requests,
                    batch_efficiency=rates.batch_efficiency,
                    inference_rps=rates.inference_rps,
                    age_s=now - last if last is not None else -1.0,
                )
            )
        counts = merged.latency_counts
        return load_pb2.LoadSnapshot(
            model=model,
            time_unix_s=wall,
            window_s=self.config.interval_s,
            status=FRESH if merged.fresh else UNKNOWN,
            status_reason=merged.reason,
            arrival_rps=merged.arrival_rps,
            in_flight=merged.in_flight,
            ready_replicas=len(ready),
            replicas=replicas,
            latency=load_pb2.LatencyHistogram(upper_bounds_s=LATENCY_BUCKETS_S, counts=counts, sum_s=merged.latency_sum_s),
            latency_p50_s=histogram_quantile(counts, 0.5),
            latency_p99_s=histogram_quantile(counts, 0.99),
        )

    async def run(self, stop: asyncio.Event) -> None:
        subscription = await self.bus.nc.subscribe(subjects.ROUTER_TELEMETRY, cb=self._on_telemetry)
        timeout = aiohttp.ClientTimeout(total=self.config.scrape_timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while not stop.is_set():
                    await wait_any(self.config.interval_s, stop)
                    if not stop.is_set():
                        await self.tick(session)
        finally:
            await unsubscribe(subscription)

    async def tick(self, session: aiohttp.ClientSession) -> None:
        ready = {key: r for key, r in self.view.replicas.items() if r.state == READY}
        for key in set(self._tracks) - set(ready):
            del self._tracks[key]
        await asyncio.gather(*(self._scrape(session, key, replica) for key, replica in ready.items()))
        now, wall = time.monotonic(), time.time()
        for model in sorted(self.view.known_models()):
            snapshot = self.snapshot(model, now, wall)
            self.latest[model] = snapshot
            self._export(snapshot)
            try:
                await self.bus.nc.publish(subjects.load_subject(model), snapshot.SerializeToString())
            except Exception as error:  # loss-tolerant: the next interval publishes again
                log.warning("publishing the load snapshot of %s failed: %s", model, error)

    def _export(self, snapshot: load_pb2.LoadSnapshot) -> None:
        fresh = snapshot.status == FRESH
        self.metrics.fresh.labels(snapshot.model).set(1.0 if fresh else 0.0)
        self.metrics.ready_replicas.labels(snapshot.model).set(snapshot.ready_replicas)
        if fresh:
            self.metrics.arrival_rps.labels(snapshot.model).set(snapshot.arrival_rps)
            self.metrics.in_flight.labels(snapshot.model).set(snapshot.in_flight)
