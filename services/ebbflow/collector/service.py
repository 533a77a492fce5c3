"""The collector's shell: scrape ready replicas, merge router telemetry, publish and keep LoadSnapshots.

Every `interval_s`, on a fixed cadence:
1. scrape every ready replica's /metrics concurrently (keep-alive, timeout);
2. build each model's LoadSnapshot (last interval plus trailing windows);
3. publish it on NATS, hand it to WatchSnapshots streams, export it on
   /metrics, and add a row to the model's history.
History rows go to JetStream every `history_flush_s` (fine rows) and at each
completed coarse step, and are read back at start, so a restarted collector
still answers GetHistory for the time before it.

Several collectors share the models (shards.py: rendezvous hashing over the
live collectors, membership.py: who is live): each scrapes and publishes
only the models it owns, re-judged every tick. Every collector also listens
to the snapshots the others publish (`ebbflow.load.>`) and keeps them as its
latest and as history rows, so any collector answers any model over gRPC,
and a collector that takes a model over already holds its recent history.
Only the owner writes a model's history to JetStream; one that gives a model
up writes what it has pending at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import aiohttp
from google.protobuf.message import DecodeError
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ebbflow.collector.core import ReplicaRates, ReplicaTrack, RouterWindow, combine_replicas, merge_router_windows, scrape_of
from ebbflow.collector.history import ModelHistory, Rows, WindowStats, from_chunk, snapshot_row, to_chunk
from ebbflow.collector.membership import Membership
from ebbflow.collector.metrics_text import parse_metrics_text
from ebbflow.runtime.wire import LATENCY_BUCKETS_S, READY, address, histogram_quantile
from ebbflow.runtime import subjects, tracing
from ebbflow.runtime.bus import Bus, replay_subject, unsubscribe
from ebbflow.runtime.config import CollectorConfig
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.registry import RegistryView
from ebbflow.v1 import collector_pb2, load_pb2, registry_pb2

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)

FRESH = load_pb2.DATA_STATUS_FRESH
STALE = load_pb2.DATA_STATUS_STALE
UNKNOWN = load_pb2.DATA_STATUS_UNKNOWN
BOUNDS = LATENCY_BUCKETS_S
WATCH_QUEUE = 16


class CollectorMetrics:
    """The collector's own health and the load picture, re-exported for dashboards (README "Metrics")."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def model_gauge(name: str, help_text: str) -> Gauge:
            return Gauge(f"ebbflow_model_{name}", help_text, ["model"], registry=registry)

        def replica_gauge(name: str, help_text: str) -> Gauge:
            return Gauge(f"ebbflow_replica_{name}", help_text, ["model", "replica"], registry=registry)

        self.scrapes = Counter("ebbflow_collector_scrapes", "Replica /metrics scrapes by result", ["result"], registry=registry)
        self.scrape_seconds = Histogram(
            "ebbflow_collector_scrape_seconds", "Wall time of one round of scrapes", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=registry
        )
        self.history_writes = Counter("ebbflow_collector_history_writes", "History chunks written to JetStream by result", ["result"], registry=registry)
        self.owned_models = Gauge("ebbflow_collector_owned_models", "Models this collector scrapes and publishes (its shard)", registry=registry)
        self.owned_endpoints = Gauge("ebbflow_collector_owned_endpoints", "Ready replica endpoints of this collector's models, scraped each interval", registry=registry)
        self.members = Gauge("ebbflow_collector_members", "Live collectors sharing the models, this one included", registry=registry)
        self.owns = Gauge("ebbflow_collector_owns", "1 for each model this collector owns (absent for the others)", ["model"], registry=registry)
        self.model_moves = Counter("ebbflow_collector_model_moves", "Models this collector took over or gave up", ["direction"], registry=registry)
        self.model = {
            "fresh": model_gauge("load_fresh", "1 when the model's router telemetry is fresh, else 0"),
            "arrival_rps": model_gauge("arrival_rps", "Requests offered per second (demand), last interval"),
            "in_flight": model_gauge("in_flight", "Time-averaged in-flight requests at the routers, last interval"),
            "ready_replicas": model_gauge("ready_replicas", "Ready replicas"),
            "stale_replicas": model_gauge("stale_replicas", "Ready replicas whose metrics are stale"),
            "latency_p50_seconds": model_gauge("latency_p50_seconds", "Median router latency, last interval"),
            "latency_p99_seconds": model_gauge("latency_p99_seconds", "99th percentile router latency, last interval"),
            "in_system": model_gauge("in_system", "Requests inside Triton, summed over replicas"),
            "queued": model_gauge("queued", "Requests queued inside Triton, summed over replicas"),
            "pending_requests": model_gauge("pending_requests", "Triton pending requests, summed over replicas"),
            "batch_efficiency": model_gauge("batch_efficiency", "Inferences per model execution"),
            "inference_rps": model_gauge("inference_rps", "Inferences completed per second"),
            "prompt_tokens_per_second": model_gauge("prompt_tokens_per_second", "Prompt tokens processed per second"),
            "generated_tokens_per_second": model_gauge("generated_tokens_per_second", "Output tokens generated per second"),
            "gpu_utilization": model_gauge("gpu_utilization", "Mean GPU utilisation of the model's replicas [0, 1]"),
        }
        self.window = {
            "arrival_rps": Gauge("ebbflow_model_window_arrival_rps", "Requests offered per second over a trailing window", ["model", "window"], registry=registry),
            "in_flight": Gauge("ebbflow_model_window_in_flight", "In-flight requests over a trailing window", ["model", "window"], registry=registry),
            "latency_p99_seconds": Gauge("ebbflow_model_window_latency_p99_seconds", "99th percentile router latency over a trailing window", ["model", "window"], registry=registry),
        }
        self.replica = {
            "fresh": replica_gauge("metrics_fresh", "1 when the replica's /metrics scrape is fresh, else 0"),
            "scrape_age_seconds": replica_gauge("scrape_age_seconds", "Seconds since the last successful scrape"),
            "in_system": replica_gauge("in_system", "Requests inside Triton"),
            "queued": replica_gauge("queued", "Requests queued inside Triton"),
            "pending_requests": replica_gauge("pending_requests", "Triton pending requests"),
            "batch_efficiency": replica_gauge("batch_efficiency", "Inferences per model execution"),
            "inference_rps": replica_gauge("inference_rps", "Inferences completed per second"),
            "failure_rps": replica_gauge("failure_rps", "Failed requests per second"),
            "kv_cache_usage": replica_gauge("kv_cache_usage", "KV-cache usage ratio"),
            "gpu_utilization": replica_gauge("gpu_utilization", "Mean GPU utilisation [0, 1]"),
            "gpu_memory_used_bytes": replica_gauge("gpu_memory_used_bytes", "GPU memory used"),
            "cpu_utilization": replica_gauge("cpu_utilization", "Host CPU utilisation [0, 1]"),
        }
        self._replica_labels: set[tuple[str, str]] = set()
        self._window_labels: set[tuple[str, str]] = set()

    def export(self, snapshot: load_pb2.LoadSnapshot) -> None:
        model = snapshot.model
        fresh = snapshot.status == FRESH
        self.model["fresh"].labels(model).set(1.0 if fresh else 0.0)
        self.model["ready_replicas"].labels(model).set(snapshot.ready_replicas)
        self.model["stale_replicas"].labels(model).set(snapshot.stale_replicas)
        if fresh:  # unknown load keeps its last exported value rather than dropping to zero
            self.model["arrival_rps"].labels(model).set(snapshot.arrival_rps)
            self.model["in_flight"].labels(model).set(snapshot.in_flight)
            self.model["latency_p50_seconds"].labels(model).set(snapshot.latency_p50_s)
            self.model["latency_p99_seconds"].labels(model).set(snapshot.latency_p99_s)
        for name in ("in_system", "queued", "pending_requests", "batch_efficiency", "inference_rps", "gpu_utilization"):
            self.model[name].labels(model).set(getattr(snapshot, name))
        self.model["prompt_tokens_per_second"].labels(model).set(snapshot.prompt_tokens_per_s)
        self.model["generated_tokens_per_second"].labels(model).set(snapshot.generated_tokens_per_s)
        for window in snapshot.windows:
            label = f"{window.window_s:g}s"
            self._window_labels.add((model, label))
            if window.fresh_intervals:
                self.window["arrival_rps"].labels(model, label).set(window.arrival_rps)
                self.window["in_flight"].labels(model, label).set(window.in_flight)
                self.window["latency_p99_seconds"].labels(model, label).set(window.latency_p99_s)

    def forget(self, model: str) -> None:
        """A model given up leaves this collector's dashboards (its new owner exports it), so no sum counts it twice."""
        for gauge in [*self.model.values(), self.owns]:
            try:
                gauge.remove(model)
            except KeyError:
                pass
        for labels in [labels for labels in self._window_labels if labels[0] == model]:
            self._window_labels.discard(labels)
            for gauge in self.window.values():
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass

    def export_replicas(self, snapshots: list[load_pb2.LoadSnapshot]) -> None:
        seen: set[tuple[str, str]] = set()
        for snapshot in snapshots:
            for replica in snapshot.replicas:
                labels = (snapshot.model, replica.replica_id)
                seen.add(labels)
                self.replica["fresh"].labels(*labels).set(1.0 if replica.status == FRESH else 0.0)
                self.replica["scrape_age_seconds"].labels(*labels).set(replica.age_s)
                for name, gauge in self.replica.items():
                    if name not in ("fresh", "scrape_age_seconds"):
                        gauge.labels(*labels).set(getattr(replica, name))
        for labels in self._replica_labels - seen:  # replicas gone from the registry leave the dashboards
            for gauge in self.replica.values():
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass
        self._replica_labels = seen


class Collector:
    """Scrapes and publishes the models it owns; without `membership`, it owns every model (one collector)."""

    def __init__(self, config: CollectorConfig, bus: Bus, view: RegistryView, metrics: CollectorMetrics, membership: Membership | None = None) -> None:
        self.config = config
        self.bus = bus
        self.view = view
        self.metrics = metrics
        self.membership = membership
        self.owned: set[str] = set()
        """The models this collector scraped and published at its last tick."""
        self._owners: dict[str, bool] = {}  # model -> owned, for self._members (hashing every model every tick is waste)
        self._members: tuple[str, ...] = ()
        self._heard: dict[str, load_pb2.LoadSnapshot] = {}  # other collectors' snapshots since the last tick, for watchers
        self._heard_until: dict[str, float] = {}  # model -> start of the last history row taken from another collector
        self._models: set[str] = set()  # the models known at the last tick
        self.windows_s = tuple(sorted(config.windows_s))
        self._windows: dict[str, dict[str, RouterWindow]] = {}
        self._tracks: dict[str, ReplicaTrack] = {}
        self.history: dict[str, ModelHistory] = {}
        # model -> tier ("fine", "coarse") -> rows not yet in JetStream (kept, bounded, while NATS is away).
        self._unflushed: dict[str, dict[str, list[Rows]]] = {}
        self._tiers = (
            ("coarse", subjects.HISTORY_COARSE, config.history_coarse_step_s),
            ("fine", subjects.HISTORY_FINE, config.interval_s),
        )
        self.latest: dict[str, load_pb2.LoadSnapshot] = {}
        self._watchers: set[asyncio.Queue[dict[str, load_pb2.LoadSnapshot]]] = set()
        self.restored = asyncio.Event()
        self._trimmed: set[str] = set()

    # -- history ---------------------------------------------------------------------------------

    def _history(self, model: str) -> ModelHistory:
        if model not in self.history:
            c = self.config
            self.history[model] = ModelHistory(c.interval_s, c.history_fine_s, c.history_coarse_step_s, c.history_keep_s, BOUNDS)
        return self.history[model]

    async def _ensure_streams(self) -> None:
        c = self.config
        for name, prefix, keep_s in (
            (subjects.HISTORY_FINE_STREAM, subjects.HISTORY_FINE, c.history_fine_s),
            (subjects.HISTORY_COARSE_STREAM, subjects.HISTORY_COARSE, c.history_keep_s),
        ):
            config = StreamConfig(name=name, subjects=[f"{prefix}.>"], max_age=keep_s, num_replicas=self.bus.copies)
            try:
                await self.bus.js.stream_info(name)
                await self.bus.js.update_stream(config)
            except NotFoundError:
                await self.bus.js.add_stream(config)

    async def _read_stream(self, stream: str, prefix: str) -> dict[str, list[Rows]]:
        """Every persisted chunk of a history stream, by model, oldest first."""
        found: dict[str, list[Rows]] = {}
        for subject, data in await replay_subject(self.bus.js, stream, f"{prefix}.>"):
            try:
                chunk = collector_pb2.HistoryChunk.FromString(data)
            except DecodeError:
                log.warning("skipping an undecodable history chunk on %s", subject)
                continue
            found.setdefault(chunk.model, []).append(from_chunk(chunk, BOUNDS))
        return found

    async def restore_history(self) -> None:
        """Refill every model's history from JetStream (after a restart)."""
        fine = await self._read_stream(subjects.HISTORY_FINE_STREAM, subjects.HISTORY_FINE)
        coarse = await self._read_stream(subjects.HISTORY_COARSE_STREAM, subjects.HISTORY_COARSE)
        buckets = len(BOUNDS) + 1
        for model in set(fine) | set(coarse):
            self._history(model).restore(
                Rows.concat(Rows.empty(buckets), *fine.get(model, [])), Rows.concat(Rows.empty(buckets), *coarse.get(model, []))
            )
        if fine or coarse:
            log.info("history restored for %d model(s) from JetStream", len(set(fine) | set(coarse)))

    async def flush_history(self) -> None:
        """Write pending rows to JetStream; on failure they stay pending for the next flush."""
        for model, pending in self._unflushed.items():
            for tier, prefix, step in self._tiers:
                if not pending[tier]:
                    continue
                rows = Rows.concat(*pending[tier])
                try:
                    await self.bus.js.publish(f"{prefix}.{model}", to_chunk(model, step, rows, BOUNDS).SerializeToString(), timeout=2.0)
                except Exception as error:  # NATS away: keep the rows, bounded to what the ring holds anyway
                    self.metrics.history_writes.labels("error").inc()
                    log.warning("persisting %s history of %s failed (kept for the next try): %s", tier, model, error)
                    pending[tier] = [rows.since(rows.times[-1] - self.config.history_fine_s)]
                    continue
                self.metrics.history_writes.labels("ok").inc()
                pending[tier] = []

    # -- inputs ----------------------------------------------------------------------------------

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

    async def _on_load(self, msg) -> None:  # type: ignore[no-untyped-def]
        """Another collector's snapshot: kept as the latest and as a history row, for the API and for a takeover."""
        model = msg.subject[len(subjects.LOAD) + 1 :]
        if model in self.owned:  # our own, echoed (or from a collector whose view of the members lags: ours count)
            return
        try:
            snapshot = load_pb2.LoadSnapshot.FromString(msg.data)
        except DecodeError:
            log.warning("ignoring an undecodable load snapshot on %s", msg.subject)
            return
        self.latest[model] = self._heard[model] = snapshot
        history = self._history(model)
        interval_s = snapshot.window_s or self.config.interval_s
        start = snapshot.time_unix_s - interval_s
        if start >= history.fine.last_time + history.step_s / 2:  # one row per interval, though two may publish it for a moment
            history.add(snapshot_row(snapshot, interval_s, history.buckets))
            self._heard_until[model] = start

    async def _scrape(self, session: aiohttp.ClientSession, key: str, replica: registry_pb2.ReplicaEntry) -> None:
        track = self._tracks.setdefault(key, ReplicaTrack(keep_s=max(self.windows_s) + self.config.interval_s))
        url = f"http://{replica.host}:{replica.metrics_port}/metrics"
        try:
            async with session.get(url) as response:
                response.raise_for_status()
                text = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            self.metrics.scrapes.labels("error").inc()
            track.failed(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
            log.debug("scrape of %s failed: %s", url, error)
            return
        self.metrics.scrapes.labels("ok").inc()
        now = time.monotonic()
        track.observe(scrape_of(parse_metrics_text(text), replica.model, now), now)

    # -- the picture -----------------------------------------------------------------------------

    def _replica_load(self, entry: registry_pb2.ReplicaEntry, now: float, window_s: float) -> tuple[load_pb2.ReplicaLoad, ReplicaRates | None]:
        track = self._tracks.get(subjects.replica_key(entry.model, entry.replica_id)) or ReplicaTrack(keep_s=0.0)
        fresh, reason = track.status(now, self.config.stale_after_s)
        rates = track.rates(now, window_s)
        values = rates or ReplicaRates()
        load = load_pb2.ReplicaLoad(
            replica_id=entry.replica_id,
            address=address(entry),
            status=FRESH if fresh else STALE,
            status_reason=reason,
            age_s=now - track.last_success_s if track.last_success_s is not None else -1.0,
            **{name: getattr(values, name) for name in REPLICA_FIELDS},
        )
        return load, rates

    def snapshot(self, model: str, now: float, wall: float) -> load_pb2.LoadSnapshot:
        """The model's last interval, with a history row added and its trailing windows."""
        merged = merge_router_windows(model, self._windows.get(model, {}).values(), now, self.config.stale_after_s)
        ready = self.view.ready(model)
        replicas, rates = [], []
        for entry in ready:
            load, replica_rates = self._replica_load(entry, now, self.config.interval_s)
            replicas.append(load)
            if replica_rates is not None:
                rates.append(replica_rates)
        triton = combine_replicas(rates)
        counts = merged.latency_counts
        stale = sum(1 for r in replicas if r.status != FRESH)
        snapshot = load_pb2.LoadSnapshot(
            model=model,
            time_unix_s=wall,
            window_s=self.config.interval_s,
            status=FRESH if merged.fresh else UNKNOWN,
            status_reason=merged.reason,
            arrival_rps=merged.arrival_rps,
            in_flight=merged.in_flight,
            ready_replicas=len(ready),
            stale_replicas=stale,
            replicas=replicas,
            latency=load_pb2.LatencyHistogram(upper_bounds_s=LATENCY_BUCKETS_S, counts=counts, sum_s=merged.latency_sum_s),
            latency_p50_s=histogram_quantile(counts, 0.5),
            latency_p90_s=histogram_quantile(counts, 0.9),
            latency_p99_s=histogram_quantile(counts, 0.99),
            **{name: getattr(triton, name) for name in TRITON_FIELDS},
        )
        history = self._history(model)
        new = snapshot_row(snapshot, self.config.interval_s, history.buckets)
        if new.times[0] >= self._heard_until.get(model, -math.inf) + history.step_s / 2:  # just taken over: the last row was heard
            completed = history.add(new)
            pending = self._unflushed.setdefault(model, {"fine": [], "coarse": []})
            pending["fine"].append(new)
            if len(completed):
                pending["coarse"].append(completed)
        for window_s in self.windows_s:
            snapshot.windows.append(self._window(history.window(wall, window_s), ready, now))
        return snapshot

    def _window(self, stats: WindowStats, ready: list[registry_pb2.ReplicaEntry], now: float) -> load_pb2.WindowLoad:
        counts = stats.latency.tolist()
        return load_pb2.WindowLoad(
            window_s=stats.window_s,
            intervals=stats.intervals,
            fresh_intervals=stats.fresh_intervals,
            arrival_rps=stats.values["arrival_rps"],
            in_flight=stats.values["in_flight"],
            latency=load_pb2.LatencyHistogram(upper_bounds_s=LATENCY_BUCKETS_S, counts=[round(c) for c in counts]),
            latency_p50_s=histogram_quantile(counts, 0.5),
            latency_p90_s=histogram_quantile(counts, 0.9),
            latency_p99_s=histogram_quantile(counts, 0.99),
            ready_replicas_min=stats.ready_min,
            ready_replicas_max=stats.ready_max,
            replicas=[self._replica_load(entry, now, stats.window_s)[0] for entry in ready],
            **{name: stats.values[name] for name in TRITON_FIELDS},
        )

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        following = None
        if self.membership is not None:
            following = asyncio.create_task(self.membership.run(self.bus, stop), name="collector membership")
            following.add_done_callback(_report)
        try:
            await self._ensure_streams()
            await self.restore_history()
        except Exception as error:  # history is a convenience; the live picture must not wait for it
            log.warning("history could not be restored from JetStream: %s", error)
        self.restored.set()
        if self.membership is not None:  # so the first tick takes this collector's share, not every model
            await wait_any(MEMBERS_WAIT_S, self.membership.loaded, stop)
        subscriptions = [
            await self.bus.nc.subscribe(subjects.ROUTER_TELEMETRY, cb=self._on_telemetry),
            await self.bus.nc.subscribe(f"{subjects.LOAD}.>", cb=self._on_load),
        ]
        timeout = aiohttp.ClientTimeout(total=self.config.scrape_timeout_s)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=max(30.0, 3 * self.config.interval_s))
        next_tick = time.monotonic()
        next_flush = next_tick + self.config.history_flush_s
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                while not stop.is_set():
                    next_tick += self.config.interval_s
                    await wait_any(max(0.0, next_tick - time.monotonic()), stop)
                    if stop.is_set():
                        break
                    if time.monotonic() - next_tick > self.config.interval_s:  # fell behind: skip, don't burst
                        next_tick = time.monotonic()
                    await self.tick(session)
                    if time.monotonic() >= next_flush:
                        next_flush += self.config.history_flush_s
                        await self.flush_history()
        finally:
            for subscription in subscriptions:
                await unsubscribe(subscription)
            await self.flush_history()
            if following is not None:
                if not stop.is_set():
                    following.cancel()
                await asyncio.gather(following, return_exceptions=True)

    async def tick(self, session: aiohttp.ClientSession) -> None:
        owned = await self._take_share(self.view.known_models() | set(self._windows))
        ready = {key: r for key, r in self.view.replicas.items() if r.state == READY and r.model in owned}
        for key in set(self._tracks) - set(ready):
            del self._tracks[key]
        self.metrics.owned_endpoints.set(len(ready))
        started = time.monotonic()
        await asyncio.gather(*(self._scrape(session, key, replica) for key, replica in ready.items()))
        self.metrics.scrape_seconds.observe(time.monotonic() - started)
        now, wall = time.monotonic(), time.time()
        snapshots = {}
        for model in sorted(owned):
            snapshot = self.snapshot(model, now, wall)
            snapshots[model] = snapshot
            self.latest[model] = snapshot
            self.metrics.export(snapshot)
            try:
                await self.bus.nc.publish(subjects.load_subject(model), self._fit_payload(snapshot), headers=self._traced(snapshot))
            except Exception as error:  # loss-tolerant: the next interval publishes again
                log.warning("publishing the load snapshot of %s failed: %s", model, error)
        self.metrics.export_replicas(list(snapshots.values()))
        heard, self._heard = self._heard, {}
        everything = heard | snapshots
        for queue in self._watchers:
            if queue.full():  # a slow watcher skips an interval rather than holding the collector up
                queue.get_nowait()
            queue.put_nowait(everything)

    def _traced(self, snapshot: load_pb2.LoadSnapshot) -> dict[str, str] | None:
        """The snapshot's `load snapshot` span, as NATS headers for its readers (None when tracing is off)."""
        if not tracing.enabled():
            return None
        with TRACER.start_as_current_span("load snapshot") as span:
            tracing.set_attributes(span, {
                "ebbflow.model": snapshot.model, "ebbflow.load.status": load_pb2.DataStatus.Name(snapshot.status),
                "ebbflow.load.in_flight": snapshot.in_flight, "ebbflow.load.arrival_rps": snapshot.arrival_rps,
                "ebbflow.load.ready_replicas": snapshot.ready_replicas,
            })
            return tracing.headers(span)

    async def _take_share(self, models: set[str]) -> set[str]:
        """The models this collector owns now (all of them without membership); says what moved since the last tick."""
        if self.membership is None:
            owned = set(models)
        else:
            shard = self.membership.shard()
            if shard.members != self._members:
                log.info("collectors live: %s (this one: %s)", ", ".join(shard.members), shard.me)
                self._members, self._owners = shard.members, {}
            for model in models - self._owners.keys():
                self._owners[model] = shard.owns(model)
            owned = {model for model in models if self._owners[model]}
            self.metrics.members.set(len(shard.members))
        taken = owned - self.owned
        given = self.owned - owned
        moved_in, moved_out = taken & self._models, given & models  # models that existed before and after
        if self.membership is not None and (moved_in or moved_out):
            log.info("now owns %d of %d model(s): took %s, gave up %s", len(owned), len(models), sorted(moved_in) or "none", sorted(moved_out) or "none")
        self.metrics.model_moves.labels("taken").inc(len(moved_in))
        self.metrics.model_moves.labels("given").inc(len(moved_out))
        for model in taken:
            self.metrics.owns.labels(model).set(1.0)
        for model in given:
            self.metrics.forget(model)
        self.owned, self._models = owned, set(models)
        self.metrics.owned_models.set(len(owned))
        if moved_out:  # the new owner takes the history on from what is in JetStream (and what it heard)
            await self.flush_history()
        return owned

    def _fit_payload(self, snapshot: load_pb2.LoadSnapshot) -> bytes:
        """The snapshot as bytes within NATS's max payload: with very many replicas, the per-window
        replica lists (then the replica list) are left out of the NATS copy; gRPC keeps them."""
        data = snapshot.SerializeToString()
        limit = self.bus.nc.max_payload
        if len(data) <= limit:
            return data
        trimmed = load_pb2.LoadSnapshot()
        trimmed.CopyFrom(snapshot)
        for window in trimmed.windows:
            del window.replicas[:]
        data = trimmed.SerializeToString()
        if len(data) > limit:
            del trimmed.replicas[:]
            data = trimmed.SerializeToString()
        if snapshot.model not in self._trimmed:
            self._trimmed.add(snapshot.model)
            log.warning("the load snapshot of %s exceeds NATS's %d-byte payload limit: replica details are left out on NATS (GetSnapshot has them)", snapshot.model, limit)
        return data

    def watch(self) -> asyncio.Queue[dict[str, load_pb2.LoadSnapshot]]:
        queue: asyncio.Queue[dict[str, load_pb2.LoadSnapshot]] = asyncio.Queue(maxsize=WATCH_QUEUE)
        self._watchers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[dict[str, load_pb2.LoadSnapshot]]) -> None:
        self._watchers.discard(queue)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("following the collectors' membership stopped with an error", exc_info=task.exception())


MEMBERS_WAIT_S = 5.0
"""At start, the longest the first tick waits for the other collectors' announcements to be read, seconds."""
TRITON_FIELDS = ("in_system", "queued", "pending_requests", "batch_efficiency", "inference_rps", "prompt_tokens_per_s", "generated_tokens_per_s", "gpu_utilization")
REPLICA_FIELDS = tuple(name for name in ReplicaRates.__dataclass_fields__)

