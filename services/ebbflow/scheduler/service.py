"""The scheduler's shell: load snapshots, router pushes, forecasts and wake-ups in; the pure steps run; decisions out.

For each model it gathers what the steps read: vertical_auto's candidate
shapes and their curves (scheduler.vertical), the other models' demands on
the fleet GPU budget (scheduler.budget), and the rule's DecisionInputs
(scheduler.core), then hands the decision to scheduler.publish, which writes
the desired state with compare-and-set and records the decision with every
step's inputs (scheduler.explain).

Several schedulers may run on one NATS; only the one holding the lease
(scheduler.leadership) evaluates and writes. A standby keeps its inputs warm
(it subscribes to everything the leader does and keeps the same windows), so
when it takes over it decides within one interval, from the desired state in
KV and with its load window already full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from google.protobuf.message import DecodeError
from nats.js.errors import KeyNotFoundError
from prometheus_client import CollectorRegistry, Counter, Gauge

from ebbflow.policy import ModelPolicy, policy_from_proto
from ebbflow.runtime import subjects, tracing
from ebbflow.runtime.bus import Bus, unsubscribe
from ebbflow.runtime.config import PlacementConfig, SchedulerConfig
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.registry import RegistryView
from ebbflow.runtime.triton import vertical_of
from ebbflow.runtime.wire import ROUTER_TELEMETRY_FRESH_S
from ebbflow.scheduler.budget import BudgetInputs, Demand, budget_for, gpus_per_replica, replica_memory_gb
from ebbflow.scheduler.capacity import CapacityModel
from ebbflow.scheduler.core import DecisionInputs, ForecastView, LoadView, ScalingState, decide, initial_decision, lead_time, resume_state
from ebbflow.scheduler.curves import CapacityStore, CurveSpec, TokenMix
from ebbflow.scheduler.explain import record_initial, record_inputs
from ebbflow.scheduler.lease import LeaseTiming
from ebbflow.scheduler.leadership import Leadership
from ebbflow.scheduler.load_window import LoadWindow, PushWindow
from ebbflow.placement import largest_gpu_gb, parse_node
from ebbflow.scheduler.publish import Publisher
from ebbflow.scheduler.resume import Resumed, note_snapshot, warming, while_warming
from ebbflow.scheduler.vertical import ShapeCurves, ShapeInputs, candidate_shapes, choose_vertical, in_force_shape, with_shape
from ebbflow.v1 import forecast_pb2, load_pb2, scheduling_pb2

log = logging.getLogger(__name__)

COLD_STARTS_KEPT = 8
"""Recent cold starts per model the lead is read from (the slowest of them)."""

WAKEUP_MEMORY_S = 2.0


@dataclass
class Received:
    load: LoadView
    at_s: float


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter("ebbflow_scheduler_decisions", "Desired-state changes written", ["model"], registry=registry)
        self.drivers = Counter(
            "ebbflow_scheduler_decision_drivers", "Desired-state changes written, by direction and what drove them (scheduler.core.driver)",
            ["model", "direction", "driver"], registry=registry,
        )
        self.desired = Gauge("ebbflow_scheduler_desired_replicas", "Desired replicas in force", ["model"], registry=registry)
        self.holds = Counter("ebbflow_scheduler_holds", "Ticks that held because load data was missing or stale", ["model"], registry=registry)
        self.conflicts = Counter("ebbflow_scheduler_cas_conflicts", "Desired-state writes refused by compare-and-set", ["model"], registry=registry)
        self.leader = Gauge("ebbflow_scheduler_leader", "1 while this scheduler holds the leadership lease and decides, 0 while it stands by", registry=registry)
        # What the alert rules compare against (deploy/prometheus): the lead a model is sized for, what it wants
        # before the GPU budget, and the objectives of its policy.
        self.demand = Gauge("ebbflow_scheduler_demand_replicas", "Replicas the model's load asks for before the fleet GPU budget's cap", ["model"], registry=registry)
        self.desired_gpus = Gauge("ebbflow_scheduler_desired_gpus", "GPUs the model's decided replicas take", ["model"], registry=registry)
        self.lead = Gauge("ebbflow_scheduler_lead_seconds", "Lead time the model is sized for (policy lead_s, else its observed cold starts)", ["model"], registry=registry)
        self.gpu_budget = Gauge("ebbflow_scheduler_gpu_budget", "Fleet GPU budget shared by the models (0: none)", registry=registry)
        self.slo_latency = Gauge("ebbflow_policy_slo_latency_seconds", "The model's request latency objective (0: none)", ["model"], registry=registry)
        self.slo_ttft = Gauge("ebbflow_policy_slo_ttft_seconds", "The model's time-to-first-token objective (0: none)", ["model"], registry=registry)
        self.slo_share = Gauge("ebbflow_policy_slo_share", "Share of requests the objectives must hold for (0.99 for p99)", ["model"], registry=registry)

    def export_policy(self, model: str, policy: ModelPolicy) -> None:
        self.slo_latency.labels(model).set(policy.slo_latency_s)
        self.slo_ttft.labels(model).set(policy.slo_ttft_s)
        self.slo_share.labels(model).set(policy.slo_share)


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        bus: Bus,
        view: RegistryView,
        metrics: SchedulerMetrics,
        time_scale: float = 1.0,
        placement: PlacementConfig = PlacementConfig(),
        instance_id: str = "",
    ) -> None:
        self.config = config
        self.time_scale = time_scale
        """The emulator's time scale (actuator.time_scale): curves are measured in the seconds clients see."""
        self.bus = bus
        self.view = view
        self.metrics = metrics
        self._loads: dict[str, Received] = {}
        self._woken_until: dict[str, float] = {}
        self._states: dict[str, ScalingState] = {}
        self._forecasts: dict[str, ForecastView] = {}
        self._dirty: set[str] = set()
        self._evaluated_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._last_arrival: dict[str, float] = {}
        # Cold starts seen per model (the last few), kept past the replicas that made them: a model back at zero
        # has none in the registry, and its scale from zero used the 30 s default lead instead of its own ~5 s.
        self._cold_starts: dict[str, dict[str, float]] = {}
        self._windows: dict[str, LoadWindow] = {}
        # Per router worker: its recent pushes (each model's in-flight in one telemetry window).
        self._pushed: dict[str, PushWindow] = {}
        self.leadership = Leadership(bus.leases, LeaseTiming(config.lease_s, config.lease_renew_s), metrics.leader, self._on_leadership, instance_id)
        """Whether this scheduler decides: the lease in the `leases` bucket (one leads, others stand by)."""
        self.publisher = Publisher(bus, metrics, self.leads)
        self.evaluations = self.publisher.evaluations
        """Each model's latest evaluation (holds and no-changes included), with the inputs it can be recomputed from."""
        self._tokens: dict[str, TokenMix] = {}
        self.capacity = CapacityStore(bus.capacity, on_ready=self._decide_all_now)
        self.nodes = [parse_node(text) for text in placement.nodes]
        self.budget_gpus = placement.gpu_budget or float(sum(n.gpus for n in self.nodes))
        """Fleet GPU budget (0: none)."""
        metrics.gpu_budget.set(self.budget_gpus)
        self.largest_gpu_gb = largest_gpu_gb(self.nodes) if self.nodes else 0.0
        """The inventory's largest GPU, GB (0: no inventory): what a replica of unknown size takes."""
        self._demands: dict[str, Demand] = {}
        self._resumed: dict[str, Resumed] = {}
        """Models found with replicas an earlier scheduler decided: they warm up first (scheduler.resume)."""
        self._seen: set[str] = set()
        """Models this scheduler has evaluated (a model it gave its initial decision is not resumed)."""
        self._served_since: dict[str, float] = {}
        """Per model, this process's first fresh snapshot with a ready replica: how long its load window has been filling."""
        self._read: dict[str, dict[str, str]] = {}
        """Per model, the traceparent of the latest load snapshot and forecast read (kept only while tracing is on):
        a decision's span links to them (runtime.tracing)."""

    def leads(self) -> bool:
        """Whether this scheduler may decide now (it holds the lease, renewed within the deadline)."""
        return self.leadership.leads()

    def _on_leadership(self, leading: bool) -> None:
        """Gained: decide on every model at once. Lost: forget what only a leader keeps, so a later term resumes
        from the desired state in KV, as a restarted scheduler does, and `explain` reads the recorded decisions."""
        if leading:
            self._decide_all_now()
            return
        self._states.clear()
        self._seen.clear()
        self._resumed.clear()
        self._demands.clear()
        self._evaluated_at.clear()
        self.evaluations.clear()
        self.publisher.forget()

    def _decide_all_now(self) -> None:
        self._dirty.update(self.view.policies)
        self._wake.set()

    async def _on_forecast(self, msg) -> None:  # type: ignore[no-untyped-def]
        try:
            forecast = forecast_pb2.Forecast.FromString(msg.data)
        except DecodeError:
            return
        self._note_read(forecast.model, "forecast", msg.headers)
        untrusted = forecast.untrusted_reason
        if not untrusted and forecast.observations < self.config.min_forecast_observations:
            untrusted = f"{forecast.observations} bins observed, {self.config.min_forecast_observations} needed (scheduler.min_forecast_observations)"
        if not forecast.quantiles and not untrusted:
            self._forecasts.pop(forecast.model, None)  # no forecast: reactive only
            return
        age = max(0.0, time.time() - forecast.issued_at_unix_s)
        self._forecasts[forecast.model] = ForecastView(
            issued_s=time.monotonic() - age,
            step_s=forecast.step_s,
            quantiles={round(q.quantile, 4): tuple(q.arrival_rps) for q in forecast.quantiles},
            method=forecast.method,
            untrusted_reason=untrusted,
        )

    def _note_read(self, model: str, what: str, headers: dict[str, str] | None) -> None:
        if tracing.enabled() and headers and "traceparent" in headers:
            self._read.setdefault(model, {})[what] = headers["traceparent"]

    def lead_s(self, model: str, policy: ModelPolicy) -> float:
        seen = self._cold_starts.setdefault(model, {})
        for e in self.view.of_model(model):
            if e.ready_at_unix_s > e.started_at_unix_s > 0:
                seen[e.replica_id] = e.ready_at_unix_s - e.started_at_unix_s
        while len(seen) > COLD_STARTS_KEPT:
            seen.pop(next(iter(seen)))  # the oldest seen first
        return lead_time(policy, list(seen.values()), self.config.interval_s)

    async def _on_load(self, msg) -> None:  # type: ignore[no-untyped-def]
        try:
            snapshot = load_pb2.LoadSnapshot.FromString(msg.data)
        except DecodeError:
            return
        self._note_read(snapshot.model, "load", msg.headers)
        fresh = snapshot.status == load_pb2.DATA_STATUS_FRESH
        now = time.monotonic()
        if fresh and snapshot.arrival_rps > 0:
            self._last_arrival[snapshot.model] = now
        window = self._windows.setdefault(snapshot.model, LoadWindow(self.config.load_window_s))
        if fresh:
            window.add(now, snapshot.in_flight, snapshot.arrival_rps)
        resumed = self._resumed.get(snapshot.model)
        if resumed is not None:
            self._resumed[snapshot.model] = note_snapshot(resumed, now, fresh, snapshot.ready_replicas)
        if fresh and snapshot.ready_replicas > 0:
            self._served_since.setdefault(snapshot.model, now)
        if snapshot.inference_rps > 0 and snapshot.prompt_tokens_per_s > 0:
            mix = self._tokens.setdefault(snapshot.model, TokenMix())
            mix.observe(snapshot.prompt_tokens_per_s, snapshot.generated_tokens_per_s, snapshot.inference_rps, snapshot.window_s or 1.0)
        self._loads[snapshot.model] = Received(
            LoadView(fresh=fresh, in_flight=snapshot.in_flight, arrival_rps=snapshot.arrival_rps, reason=snapshot.status_reason), time.monotonic()
        )
        if self.config.react_to_snapshots:
            self._dirty.add(snapshot.model)
            self._wake.set()  # a new picture is decided on at once, not at the next tick

    async def _on_router_telemetry(self, msg) -> None:  # type: ignore[no-untyped-def]
        """Knative's push: the routers' in-flight reaches panic without waiting for the collector's next snapshot."""
        try:
            telemetry = load_pb2.RouterTelemetry.FromString(msg.data)
        except DecodeError:
            return
        now = time.monotonic()
        self._pushed.setdefault(telemetry.router_id, PushWindow(self.config.burst_window_s)).add(now, {m.model: m.in_flight_avg for m in telemetry.models})
        if not self.config.react_to_snapshots:
            return  # the next tick reads the push
        for model in {m.model for m in telemetry.models}:
            received = self._loads.get(model)
            # A sharp rise over the last snapshot is decided on now; anything else waits for the snapshot.
            if received is not None and self._burst(model, now) > max(2.0 * received.load.in_flight, 1.0):
                self._dirty.add(model)
                self._wake.set()

    def _burst(self, model: str, now: float) -> float:
        """In-flight the routers pushed over the burst window (each router's mean), summed over the routers alive
        (heard from within ROUTER_TELEMETRY_FRESH_S); -1 if none."""
        means = [pushes.mean(model, now) for pushes in self._pushed.values() if now - pushes.heard_at() < ROUTER_TELEMETRY_FRESH_S]
        known = [m for m in means if m is not None]
        return sum(known) if known else -1.0

    async def _on_wakeup(self, msg) -> None:  # type: ignore[no-untyped-def]
        model = msg.subject.rsplit(".", 1)[-1]
        first = self._woken_until.get(model, 0.0) < time.monotonic()
        self._woken_until[model] = time.monotonic() + WAKEUP_MEMORY_S
        if first:
            self._dirty.add(model)
            self._wake.set()  # evaluate at once, not at the next tick

    def _load(self, model: str, now: float) -> LoadView | None:
        received = self._loads.get(model)
        if received is None:
            return None
        if now - received.at_s > self.config.stale_after_s:
            return LoadView(False, 0.0, 0.0, f"no load snapshot from the collector for {now - received.at_s:.0f} s")
        last = self._last_arrival.get(model)
        load = replace(
            received.load, forecast=self._forecasts.get(model), idle_s=now - last if last is not None else -1.0, burst_in_flight=self._burst(model, now)
        )
        window = self._windows.get(model)
        means = window.means(now) if window is not None else None
        if load.fresh and window is not None and means is not None:
            # The rule reads the stable window's means (load_window), not the last second's; panic the burst
            # window's, from the routers' push or the snapshots, whichever is higher (the push may be off or late).
            burst = max(load.burst_in_flight, window.in_flight.mean(now, self.config.burst_window_s) or 0.0)
            load = replace(load, in_flight=means[0], arrival_rps=means[1], burst_in_flight=burst, recent_peak_rps=window.recent_peak_rps(now))
        return load

    def curve_spec(self, model: str, policy: ModelPolicy) -> tuple[CurveSpec | None, str]:
        """What the model's capacity curves are measured from, or None and why they cannot be."""
        config = self.view.model_configs.get(model)
        if config is None:
            return None, "the model's Triton config is not known yet"
        profile = config.parameters["profile"].string_value if "profile" in config.parameters else ""
        if not profile:
            return None, "the model's config.pbtxt names no latency profile (parameter 'profile') to measure capacity from"
        prompt, output = self._tokens.get(model, TokenMix()).on_grid()
        spec = CurveSpec(
            profile=profile,
            instances=max(1, policy.instances_per_replica),
            max_batch=max(1, policy.max_batch_size),
            ttft_s=policy.slo_ttft_s,
            tpot_s=policy.slo_tpot_s,
            latency_s=policy.slo_latency_s,
            percentile=policy.slo_share * 100,
            prompt_tokens=prompt,
            output_tokens=output,
            speed_factor=round(1.0 / self.time_scale, 6),
        )
        return spec, ""

    def shape_inputs(self, model: str, policy: ModelPolicy, current: scheduling_pb2.DesiredState | None) -> ShapeInputs:
        """What vertical_auto chooses the shape from: every candidate's curves, whose measuring this starts."""
        in_force = in_force_shape(policy, current.vertical.instances_per_replica if current else 0, current.vertical.max_batch_size if current else 0)
        candidates = []
        for shape in candidate_shapes(policy):
            spec, why = self.curve_spec(model, with_shape(policy, shape))
            if spec is None:
                return ShapeInputs(policy, in_force, (), why, self.largest_gpu_gb)
            measured, _ = self.capacity.get(spec)
            candidates.append(ShapeCurves(shape, spec.key, measured))
        return ShapeInputs(policy, in_force, tuple(candidates), "", self.largest_gpu_gb)

    def gpus_per_replica(self, policy: ModelPolicy) -> float:
        """Fraction of a GPU one replica takes (1 without an inventory: a replica per GPU)."""
        return gpus_per_replica(self.largest_gpu_gb, policy)

    def vertical_for(self, policy: ModelPolicy) -> scheduling_pb2.VerticalDecision:
        return scheduling_pb2.VerticalDecision(
            instances_per_replica=policy.instances_per_replica, max_batch_size=policy.max_batch_size, gpu_memory_gb=replica_memory_gb(self.largest_gpu_gb, policy)
        )

    def _note_demand(self, model: str, policy: ModelPolicy, replicas: int) -> None:
        """Remember what the model wants; when that changes, the other models re-decide at once (their room may have changed)."""
        demand = Demand(model, policy.priority, replicas, self.gpus_per_replica(policy))
        if self.budget_gpus > 0 and self._demands.get(model) != demand:
            self._dirty.update(m for m in self.view.policies if m != model)
            self._wake.set()
        self._demands[model] = demand

    def demand_of(self, model: str) -> Demand | None:
        """What the model last wanted (before the budget), or None before its first decision."""
        return self._demands.get(model)

    def budget_inputs(self, model: str) -> BudgetInputs | None:
        """What the fleet GPU budget's share for this model is computed from (scheduler.budget); None without a budget."""
        if self.budget_gpus <= 0:
            return None
        others = tuple(sorted((d for m, d in self._demands.items() if m in self.view.policies and m != model), key=lambda d: d.model))
        return BudgetInputs(self.budget_gpus, others, self.largest_gpu_gb)

    def capacity_for(self, model: str, policy: ModelPolicy) -> tuple[CapacityModel | None, str, str]:
        """The model's capacity curves (with their key), or None and why SLO sizing is not in force."""
        if not policy.has_slo:
            return None, "", ""
        spec, why = self.curve_spec(model, policy)
        if spec is None:
            return None, "", why
        capacity, why = self.capacity.get(spec)
        return capacity, spec.key if capacity is not None else "", why

    async def _current(self, model: str) -> tuple[scheduling_pb2.DesiredState | None, int]:
        try:
            entry = await self.bus.desired.get(model)
        except KeyNotFoundError:
            return None, 0
        try:
            return scheduling_pb2.DesiredState.FromString(entry.value or b""), entry.revision or 0
        except DecodeError:
            log.warning("desired state of %s is undecodable; it will be rewritten", model)
            return None, entry.revision or 0

    def resolved(self, model: str, policy: ModelPolicy) -> ModelPolicy:
        """The policy with vertical settings left at 0 taken from the model's Triton config (the `models` bucket)."""
        config = self.view.model_configs.get(model)
        if config is None or (policy.instances_per_replica and policy.max_batch_size):
            return policy
        instances, max_batch = vertical_of(config)
        return replace(policy, instances_per_replica=policy.instances_per_replica or instances, max_batch_size=policy.max_batch_size or max_batch)

    async def evaluate(self, model: str, policy: ModelPolicy) -> None:
        policy = self.resolved(model, policy)
        self.metrics.export_policy(model, policy)
        now = time.monotonic()
        current, revision = await self._current(model)
        first = model not in self._seen
        self._seen.add(model)
        if first and current is not None and revision:
            await self.publisher.record_missed(model, current, revision)
        load = self._load(model, now)
        advisory = policy.mode == "advisory"
        if current is None and not advisory:
            decision = initial_decision(policy)
            current_replicas = 0
            inputs = record_initial(policy)
        else:
            current_replicas = current.horizontal.replicas if current is not None else 0
            # A fresh (or restarted) scheduler must not scale down before the delay has passed.
            state = self._states.get(model)
            if state is None:
                state = resume_state(current_replicas, now)
                if current is not None and first:
                    # A standby taking over has watched the load all along: its window is as full as it says.
                    self._resumed[model] = Resumed(now, self._served_since.get(model, -1.0))
            warm_up = warming(self._resumed.get(model), current_replicas, now, self.config.load_window_s)
            if warm_up:
                load, state = while_warming(load, state, current_replicas, now, warm_up)
            else:
                self._resumed.pop(model, None)
            woken = self._woken_until.get(model, 0.0) >= now
            lead = self.lead_s(model, policy)
            self.metrics.lead.labels(model).set(lead)
            wall = time.time()
            shapes = self.shape_inputs(model, policy, current) if policy.vertical_auto else None
            policy, vertical_note = choose_vertical(shapes, load, lead, now) if shapes is not None else (policy, "")
            capacity, capacity_key, capacity_note = self.capacity_for(model, policy)
            budget = None if advisory else self.budget_inputs(model)
            given = DecisionInputs(
                load, policy, state, current_replicas, now, woken=woken, lead_s=lead, wall_s=wall, capacity=capacity, capacity_note=capacity_note,
                budget=budget_for(budget, policy) if budget is not None else None, vertical_note=vertical_note, capacity_key=capacity_key,
            )
            decision, self._states[model] = decide(given)
            inputs = record_inputs(given, decision, shapes, budget)
        self.publisher.note_evaluation(model, revision, current_replicas, decision, inputs, advisory)
        if not decision.valid:
            self.metrics.holds.labels(model).inc()
            return
        if advisory:
            self._demands.pop(model, None)  # advice takes no share of the budget
            await self.publisher.advise(model, decision, inputs, current_replicas)
            return
        self._note_demand(model, policy, decision.demand)
        self.metrics.demand.labels(model).set(decision.demand)
        self.metrics.desired_gpus.labels(model).set(decision.replicas * self.gpus_per_replica(policy))
        vertical = self.vertical_for(policy)
        if current is not None and decision.replicas == current_replicas and current.vertical == vertical:
            return
        read = [tracing.span_context_from(parent) for parent in self._read.get(model, {}).values()] if tracing.enabled() else []
        await self.publisher.write(model, revision, current_replicas, decision, vertical, inputs, create=current is None and revision == 0, read=read)

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribe, take the lease if it is free (a lone scheduler decides from its first tick), then decide on
        each tick while leading; on standby the inputs are kept and nothing is evaluated."""
        subscriptions = [
            await self.bus.nc.subscribe(f"{subjects.LOAD}.*", cb=self._on_load),
            await self.bus.nc.subscribe(f"{subjects.WAKEUP}.*", cb=self._on_wakeup),
            await self.bus.nc.subscribe(f"{subjects.FORECAST}.*", cb=self._on_forecast),
        ]
        if self.config.router_push:
            subscriptions.append(await self.bus.nc.subscribe(subjects.ROUTER_TELEMETRY, cb=self._on_router_telemetry))
        lease_stop = asyncio.Event()
        await self.leadership.look()  # a free lease is taken before the first tick
        lease_task = asyncio.create_task(self.leadership.run(lease_stop))
        try:
            next_tick = time.monotonic()
            nats_away = False
            while not stop.is_set():
                if not self.bus.nc.is_connected:
                    # NATS away: no load arrives and desired can be neither read nor written, so every model holds
                    # (said once, counted per tick) rather than waiting out a KV timeout per model per tick. The
                    # lease cannot be renewed either, so a leader stops leading after its deadline; once NATS is
                    # back it takes the lease again and resumes from the desired state in KV.
                    if not nats_away:
                        log.warning("NATS unavailable: holding every model's desired state until it is back")
                    nats_away = True
                    for model in self.view.policies:
                        self.metrics.holds.labels(model).inc()
                    self._dirty.clear()
                    self._wake.clear()
                    await wait_any(self.config.interval_s, stop)
                    continue
                if nats_away:
                    nats_away = False
                    log.warning("NATS is back: deciding again")
                if not self.leads():
                    self._dirty.clear()
                    self._wake.clear()
                    await wait_any(self.config.interval_s, stop, self._wake)
                    continue
                # At once, each model with a new snapshot or held requests; at each tick, every model not
                # evaluated within the last interval (so no model goes two intervals without a decision).
                now = time.monotonic()
                tick = now >= next_tick
                due = {m for m in self.view.policies if now - self._evaluated_at.get(m, -float("inf")) >= self.config.interval_s} if tick else set()
                models = sorted((self._dirty | due) & set(self.view.policies))
                self._dirty.clear()
                self._wake.clear()
                for model in models:
                    message = self.view.policies.get(model)
                    if message is None or not self.leads():
                        continue
                    self._evaluated_at[model] = time.monotonic()
                    try:
                        await self.evaluate(model, policy_from_proto(message))
                    except Exception:
                        log.exception("evaluating %s failed; holding", model)
                if tick:
                    next_tick = time.monotonic() + self.config.interval_s
                await wait_any(max(0.0, next_tick - time.monotonic()), stop, self._wake)
        finally:
            if stop.is_set():
                lease_stop.set()  # a clean stop hands the lease over at once
                await asyncio.gather(lease_task, return_exceptions=True)
            else:
                lease_task.cancel()  # cancelled (or failed): stop renewing and let the lease expire, as a dead process would
            for subscription in subscriptions:
                await unsubscribe(subscription)
            await self.capacity.close()
