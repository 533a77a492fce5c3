"""One validated configuration, built once at the edge (YAML file + environment) and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping

import yaml

from ebbflow.runtime.errors import ConfigError
from ebbflow.v1 import policy_pb2


@dataclass(frozen=True)
class RouterConfig:
    port: int = 8001
    """TCP port of the Triton-protocol front (0 picks a free one)."""
    host: str = "127.0.0.1"
    """Address the router listens on."""
    telemetry_interval_s: float = 1.0
    """How often arrivals, in-flight and latency are published, seconds (0.1-10)."""
    workers: int = 1
    """Router processes sharing the port (SO_REUSEPORT); 1 serves from the control-plane process itself."""
    hold_timeout_s: float = 60.0
    """Longest a request waits for a ready replica (scale from zero) before DEADLINE_EXCEEDED, seconds."""
    hold_max_requests: int = 1000
    """Requests held per model while no replica is ready; more get RESOURCE_EXHAUSTED."""
    hold_max_bytes: int = 256 * 1024 * 1024
    """Bytes of requests held per model while no replica is ready; more get RESOURCE_EXHAUSTED."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest request or response the router accepts, bytes (larger: RESOURCE_EXHAUSTED)."""
    max_retries: int = 2
    """Unary retries on another replica after a failure before any response (0 disables)."""
    retry_buffer_bytes: int = 256 * 1024 * 1024
    """Request bytes kept in memory for retries, over all requests in flight; a request beyond it is not retried."""
    eject_after_failures: int = 3
    """Consecutive connection-level failures that eject a replica from routing."""
    eject_s: float = 10.0
    """How long an ejected replica gets no requests, seconds."""
    tracing: bool = False
    """OpenTelemetry span per request through the process's tracer provider, trace context forwarded."""
    front: str = "auto"
    """What listens on the port: `haproxy` (HAProxy forwards ModelInfer of models with ready replicas itself,
    everything else to the Python router behind it; router.haproxy), `grpc` (the Python router alone), or
    `auto` (haproxy when a `haproxy` binary is installed and `tracing` is off, else grpc)."""


@dataclass(frozen=True)
class CollectorConfig:
    interval_s: float = 1.0
    """Scrape and publish interval, seconds (0.1-10)."""
    scrape_timeout_s: float = 0.8
    """Timeout of one /metrics scrape, seconds; must be below interval_s."""
    stale_after_s: float = 3.0
    """Data older than this is stale (never read as zero), seconds."""
    windows_s: tuple[float, ...] = (6.0, 60.0)
    """Trailing windows each snapshot also reports (Knative's panic and stable windows), seconds."""
    history_fine_s: float = 3600.0
    """How long history keeps one row per interval, seconds."""
    history_coarse_step_s: float = 60.0
    """Step of the long-term history rows, seconds."""
    history_keep_s: float = 7 * 86400.0
    """How long the long-term history is kept (in memory and in JetStream), seconds."""
    history_flush_s: float = 10.0
    """How often new history rows are persisted to JetStream, seconds."""


@dataclass(frozen=True)
class ForecasterConfig:
    resolutions_s: tuple[float, ...] = (10.0, 60.0, 600.0)
    """Bin widths of the forecast series, seconds; the first is the one published on NATS every bin."""
    horizon_steps: int = 12
    """Forecast horizon, in bins of each resolution (12 x 10 s = 2 min ... 12 x 10 min = 2 h)."""
    daily_season: bool = True
    """Model a daily season at resolutions where a day is at most 288 bins (once 3 days are known)."""
    refit_every_steps: int = 30
    """Refit each model's parameters every this many bins."""
    selection_window_steps: int = 60
    """Scored targets the model choice looks back over."""
    max_history_steps: int = 2000
    """Bins of history each resolution keeps (and refills from the collector at start)."""


@dataclass(frozen=True)
class SchedulerConfig:
    interval_s: float = 1.0
    """Decision tick, seconds (0.1-60)."""
    stale_after_s: float = 3.0
    """A load snapshot older than this is stale and the scheduler holds, seconds."""
    react_to_snapshots: bool = True
    """Decide on a model as soon as its load snapshot arrives, or the routers push a sharp rise of its in-flight (else only every interval_s)."""
    router_push: bool = True
    """Panic also reads the in-flight each router worker pushes once a second, ahead of the collector's snapshot (Knative's push)."""
    min_forecast_observations: int = 30
    """A forecast based on fewer observed bins is not acted on (its calibration is not established yet)."""
    load_window_s: float = 30.0
    """The rule reads in-flight and arrival rate averaged over this many seconds of collector snapshots (the
    simulator's window; one-second snapshots made the scale-down window keep their noisy peaks), 1-300."""
    burst_window_s: float = 6.0
    """Panic reads in-flight averaged over this many seconds of the routers' pushes (Knative's panic window), 1-60."""
    admin_token: str = ""
    """When set, changing policies (SetPolicy, DeletePolicy, ImportHpa that stores) needs gRPC metadata
    `authorization: Bearer <token>` (the CLI sends $EBBFLOW_ADMIN_TOKEN); reads stay open. Prefer the
    environment (EBBFLOW_SCHEDULER__ADMIN_TOKEN) to the config file for it."""


@dataclass(frozen=True)
class ActuatorConfig:
    model_repository: str = ""
    """Triton model repository; empty means the repository's deploy/model-repository."""
    time_scale: float = 1.0
    """Emulated seconds are multiplied by this (tests and demos run faster), (0, 10]."""
    reconcile_interval_s: float = 1.0
    """Level-triggered reconcile tick, seconds."""
    ready_timeout_s: float = 300.0
    """A replica not ready by then is failed and replaced, seconds."""
    drain_propagation_s: float = 1.0
    """Wait after marking a replica draining when no router is known to acknowledge it, seconds."""
    drain_timeout_s: float = 30.0
    """Longest wait for every router to acknowledge a drain with nothing left in flight there, seconds."""
    exit_timeout_s: int = 10
    """Drain bound: tritonserver --exit-timeout-secs lets in-flight requests finish, then SIGKILL, seconds."""
    crash_backoff_initial_s: float = 10.0
    """A model's replicas that keep dying are restarted after this, doubling per failure (the first is replaced at once), seconds (> 0)."""
    crash_backoff_max_s: float = 300.0
    """Longest wait between restarts of a crash-looping model, seconds (>= crash_backoff_initial_s)."""
    crash_backoff_reset_after_s: float = 600.0
    """A replica ready this long clears its model's failures (the back-off starts over), seconds (> 0)."""
    replica_log_keep_bytes: int = 256 * 1024
    """Each replica slot's log (logs/triton-<model>-<slot>.log) keeps at most this much of earlier runs when a replica starts in it, bytes (>= 4096)."""


@dataclass(frozen=True)
class PlacementConfig:
    nodes: tuple[str, ...] = ()
    """GPU inventory, one `name:GPUSxMEMORY_GB` per node (e.g. gpu-a:4x80); empty: no GPU slots (CPU hosts)."""
    gpu_budget: float = 0.0
    """Fleet budget of GPUs; when demand exceeds it, lower-priority models give way (0: every GPU of the inventory, or none without one)."""
    max_moves_per_hour: int = 6
    """Running replicas moved to another GPU per hour to free GPUs (a move is a cold start), at most (0: never)."""


_ROUTING_PREFIX = "ROUTING_POLICY_"
ROUTING_POLICIES = tuple(
    name.removeprefix(_ROUTING_PREFIX).lower() for name in policy_pb2.RoutingPolicy.keys() if name != "ROUTING_POLICY_UNSPECIFIED"
)
"""Routing policy names as the config file spells them, from the proto enum (one list for config, proto and router)."""


POLICY_MODES = ("active", "advisory")
DEFAULT_SLO_PERCENTILE = 99.0
DEFAULT_ACTIVATION_PROBABILITY = 0.5
DEFAULT_VERTICAL_MAX_INSTANCES = 4
DEFAULT_VERTICAL_MAX_BATCH = 32


def mode_to_proto(name: str) -> int:
    return policy_pb2.PolicyMode.Value("POLICY_MODE_" + name.upper())


def mode_from_proto(value: int) -> str:
    return "advisory" if value == policy_pb2.POLICY_MODE_ADVISORY else "active"


def routing_to_proto(name: str) -> int:
    return policy_pb2.RoutingPolicy.Value(_ROUTING_PREFIX + name.upper())


def routing_from_proto(value: int) -> str:
    """The config name of a proto routing value; unspecified (or unknown) is the default, least_outstanding."""
    if value == policy_pb2.ROUTING_POLICY_UNSPECIFIED or value not in policy_pb2.RoutingPolicy.values():
        return ROUTING_POLICIES[0]
    return policy_pb2.RoutingPolicy.Name(value).removeprefix(_ROUTING_PREFIX).lower()


@dataclass(frozen=True)
class ModelPolicy:
    """Per-model scaling policy (mirrors ebbflow.v1.ScalingPolicy)."""

    model: str
    min_replicas: int = 1
    """Replicas never go below this (>= 0)."""
    max_replicas: int = 4
    """Replicas never go above this (>= min_replicas, >= 1)."""
    target_in_flight_per_replica: float = 4.0
    """Reactive target of in-flight requests per replica (> 0)."""
    scale_down_delay_s: float = 30.0
    """Scale down only after the lower recommendation held this long (>= 0)."""
    instances_per_replica: int = 0
    """Triton model instances per replica (1-16); 0: as the model's config.pbtxt says."""
    max_batch_size: int = 0
    """Triton max_batch_size per replica (1-1024); 0: as the model's config.pbtxt says."""
    routing: str = "least_outstanding"
    """How the router spreads requests over ready replicas: least_outstanding, power_of_two or round_robin."""
    forecast_quantile: float = 0.9
    """Predictive sizing for this forecast quantile of demand over the lead (0 turns prediction off)."""
    lead_s: float = 0.0
    """How far ahead capacity is ordered, seconds; 0: the last observed cold start plus one decision interval."""
    scale_up_delay_s: float = 0.0
    """Scale up only to the lowest recommendation of this window (HPA's scale-up stabilisation), seconds; 0: at once."""
    max_scale_up_step: int = 0
    """Most replicas added per decision (0: no count limit)."""
    max_scale_up_percent: float = 0.0
    """Most replicas added per decision as a percent of the current ones (0: no percent limit); the larger limit applies."""
    max_scale_down_step: int = 0
    """Most replicas removed per decision (0: no count limit)."""
    max_scale_down_percent: float = 0.0
    """Most replicas removed per decision as a percent of the current ones (0: no percent limit); the larger limit applies."""
    target_utilization: float = 0.0
    """When > 0, the reactive target is this fraction of instances_per_replica x max_batch_size in flight."""

    mode: str = "active"
    """active: decisions are carried out; advisory: computed and published only."""
    pinned: bool = False
    """Manual override: hold pin_replicas (bounds ignored) until pin_until_unix_s."""
    pin_replicas: int = 0
    pin_by: str = ""
    """Who pinned (required with a pin)."""
    pin_reason: str = ""
    """Why (required with a pin)."""
    pin_until_unix_s: float = 0.0
    """When the pin ends (0: until removed)."""

    panic_threshold: float = 2.0
    """Panic when in-flight needs this many times the replicas in force: scale up at once, no scale-down for panic_hold_s (0: off)."""
    panic_hold_s: float = 60.0
    """How long a panic blocks scale-down, seconds (Knative's stable window)."""

    slo_ttft_s: float = 0.0
    """SLO: time to first token, seconds (0: no TTFT target). With any SLO target, the capacity model sizes replicas."""
    slo_tpot_s: float = 0.0
    """SLO: time per output token after the first, seconds (0: no target)."""
    slo_latency_s: float = 0.0
    """SLO: end-to-end latency, seconds (0: no target; the target for non-generative models)."""
    slo_percentile: float = 0.0
    """Percent of requests that should meet every SLO target, [50, 100) (0: 99)."""
    scale_to_zero_idle_s: float = 0.0
    """With min_replicas 0, the last replica goes only after no request arrived for this long, seconds (0: the scale-down delay)."""
    vertical_auto: bool = False
    """Let the scheduler choose instances and max batch size (within the bounds below) from the capacity model; needs an SLO."""
    vertical_max_instances: int = 0
    """Most instances per replica vertical_auto may choose (1-16; 0: 4)."""
    vertical_max_batch_size: int = 0
    """Largest max batch size vertical_auto may choose (1-1024; 0: 32)."""
    gpu_memory_gb_per_instance: float = 0.0
    """GPU memory one model instance needs, GB (0: a whole GPU per replica)."""
    priority: int = 0
    """Under a fleet GPU budget, models of lower priority give way first."""
    scale_tolerance: float = 0.1
    """When demand is within this fraction of what the replicas in force are sized for, the reactive part keeps them
    (Kubernetes HPA's tolerance, 0.1 by default there too; 0: none)."""
    activation_probability: float = 0.0
    """With min_replicas 0, the forecast keeps (or brings back) a replica only when its chance of at least one arrival
    within the idle window (Poisson at the forecast's peak rate) is at least this, (0, 1); 0: 0.5 (KEDA's activation threshold)."""

    @property
    def has_slo(self) -> bool:
        return any(target > 0 for target in (self.slo_ttft_s, self.slo_tpot_s, self.slo_latency_s))

    @property
    def slo_share(self) -> float:
        """Share of requests that should meet the SLO."""
        return (self.slo_percentile or DEFAULT_SLO_PERCENTILE) / 100

    @property
    def activation(self) -> float:
        """The chance of an arrival within the idle window below which the forecast does not keep a replica."""
        return self.activation_probability or DEFAULT_ACTIVATION_PROBABILITY

    @property
    def idle_window_s(self) -> float:
        """How long a model at one replica must see no request before scale to zero."""
        return self.scale_to_zero_idle_s or self.scale_down_delay_s

    @property
    def vertical_bounds(self) -> tuple[int, int]:
        """(most instances, largest batch) vertical_auto may choose."""
        return self.vertical_max_instances or DEFAULT_VERTICAL_MAX_INSTANCES, self.vertical_max_batch_size or DEFAULT_VERTICAL_MAX_BATCH

    def pin_active(self, wall_s: float) -> bool:
        return self.pinned and (self.pin_until_unix_s == 0 or wall_s < self.pin_until_unix_s)

    @property
    def in_flight_target(self) -> float:
        """In-flight requests one replica should carry."""
        if self.target_utilization > 0:
            # Unresolved settings (0) count as one instance running one request.
            return self.target_utilization * max(1, self.instances_per_replica) * max(1, self.max_batch_size)
        return self.target_in_flight_per_replica

    @property
    def in_flight_target_text(self) -> str:
        """The reactive target, spelled one way wherever it is shown (`policy list`, HPA import, decisions)."""
        if self.target_utilization <= 0:
            return f"in_flight_target {self.target_in_flight_per_replica:g}"
        if self.instances_per_replica and self.max_batch_size:
            return (
                f"in_flight_target {self.in_flight_target:g} (target_utilization {self.target_utilization:g}"
                f" x {self.instances_per_replica} instances x max_batch_size {self.max_batch_size})"
            )
        return f"in_flight_target target_utilization {self.target_utilization:g} x instances x max_batch_size (the model's config)"

    @property
    def sizing_text(self) -> str:
        """What replicas are sized on: the SLO when one is set, else the in-flight target."""
        if self.has_slo:
            return f"SLO {describe_slo(self.slo_ttft_s, self.slo_tpot_s, self.slo_latency_s, self.slo_percentile or DEFAULT_SLO_PERCENTILE)}"
        return self.in_flight_target_text

    def validate(self) -> "ModelPolicy":
        problems = []
        if not self.model or not all(c.isalnum() or c in "_-" for c in self.model):
            problems.append(f"model name {self.model!r} must be non-empty letters, digits, '_' or '-'")
        if self.min_replicas < 0:
            problems.append(f"min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            problems.append(f"max_replicas must be >= max(1, min_replicas), got {self.max_replicas}")
        if not self.target_in_flight_per_replica > 0:
            problems.append(f"target_in_flight_per_replica must be > 0, got {self.target_in_flight_per_replica}")
        if self.scale_down_delay_s < 0:
            problems.append(f"scale_down_delay_s must be >= 0, got {self.scale_down_delay_s}")
        if not 0 <= self.instances_per_replica <= 16:
            problems.append(f"instances_per_replica must be 1-16 (0: the model's config), got {self.instances_per_replica}")
        if not 0 <= self.max_batch_size <= 1024:
            problems.append(f"max_batch_size must be 1-1024 (0: the model's config), got {self.max_batch_size}")
        if self.forecast_quantile != 0 and not 0.5 <= self.forecast_quantile <= 0.99:
            problems.append(f"forecast_quantile must be 0 (off) or 0.5-0.99, got {self.forecast_quantile}")
        if self.lead_s < 0:
            problems.append(f"lead_s must be >= 0, got {self.lead_s}")
        for name in ("scale_up_delay_s", "max_scale_up_step", "max_scale_up_percent", "max_scale_down_step", "max_scale_down_percent"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.panic_threshold != 0 and self.panic_threshold < 1.1:
            problems.append(f"panic_threshold must be 0 (off) or >= 1.1, got {self.panic_threshold}")
        if self.panic_hold_s < 0:
            problems.append(f"panic_hold_s must be >= 0, got {self.panic_hold_s}")
        if self.mode not in POLICY_MODES:
            problems.append(f"mode must be one of {', '.join(POLICY_MODES)}, got {self.mode!r}")
        if self.pinned and (self.pin_replicas < 0 or not self.pin_by or not self.pin_reason):
            problems.append("a pin needs pin_replicas >= 0, pin_by (who) and pin_reason (why)")
        if not 0 <= self.target_utilization <= 1:
            problems.append(f"target_utilization must be 0 (unused) or in (0, 1], got {self.target_utilization}")
        for name in ("slo_ttft_s", "slo_tpot_s", "slo_latency_s", "scale_to_zero_idle_s", "gpu_memory_gb_per_instance"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.scale_tolerance < 1:
            problems.append(f"scale_tolerance must be in [0, 1), got {self.scale_tolerance}")
        if self.slo_percentile != 0 and not 50 <= self.slo_percentile < 100:
            problems.append(f"slo_percentile must be 0 (99) or in [50, 100), got {self.slo_percentile}")
        if self.vertical_auto and not self.has_slo:
            problems.append("vertical_auto needs an SLO target (slo_ttft_s, slo_tpot_s or slo_latency_s) to size against")
        if not 0 <= self.vertical_max_instances <= 16:
            problems.append(f"vertical_max_instances must be 1-16 (0: {DEFAULT_VERTICAL_MAX_INSTANCES}), got {self.vertical_max_instances}")
        if not 0 <= self.vertical_max_batch_size <= 1024:
            problems.append(f"vertical_max_batch_size must be 1-1024 (0: {DEFAULT_VERTICAL_MAX_BATCH}), got {self.vertical_max_batch_size}")
        if not 0 <= self.activation_probability < 1:
            problems.append(f"activation_probability must be in (0, 1) (0: {DEFAULT_ACTIVATION_PROBABILITY}), got {self.activation_probability}")
        if self.routing not in ROUTING_POLICIES:
            problems.append(f"routing must be one of {', '.join(ROUTING_POLICIES)}, got {self.routing!r}")
        if problems:
            raise ConfigError(f"invalid policy for model {self.model!r}: " + "; ".join(problems))
        return self


POLICY_FIELDS = tuple(f.name for f in fields(ModelPolicy))
PIN_FIELDS = ("pinned", "pin_replicas", "pin_by", "pin_reason", "pin_until_unix_s")


def describe_slo(ttft_s: float, tpot_s: float, latency_s: float, percentile: float) -> str:
    """An SLO as shown everywhere: `p99 TTFT <= 2 s, TPOT <= 0.1 s`."""
    parts = [f"{name} <= {value:g} s" for name, value in (("TTFT", ttft_s), ("TPOT", tpot_s), ("latency", latency_s)) if value]
    return f"p{percentile:g} " + ", ".join(parts)


def policy_patch(model: str, raw: Any) -> dict[str, Any]:
    """The fields a policy file gives for one model, typed; names and types checked, ranges left to merge_policy."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"models.{model} must map policy fields to values, got {type(raw).__name__} {raw!r}")
    if "model" in raw and raw["model"] != model:
        raise ConfigError(f"models.{model}.model is {raw['model']!r}; leave it out (the key names the model)")
    return {name: value for name, value in _typed_values(ModelPolicy, raw, f"models.{model}").items() if name != "model"}


def merge_policy(base: ModelPolicy, changes: Mapping[str, Any]) -> ModelPolicy:
    """`base` with the fields in `changes` replaced (a patch), validated: ConfigError naming every bad field."""
    unknown = sorted(set(changes) - set(POLICY_FIELDS))
    if unknown:
        raise ConfigError(f"unknown policy field(s): {', '.join(unknown)}; known: {', '.join(POLICY_FIELDS)}")
    if "model" in changes and changes["model"] != base.model:
        raise ConfigError(f"a patch of {base.model!r} cannot rename it to {changes['model']!r}")
    return replace(base, **changes).validate()


def dropped_pin(stored: ModelPolicy | None, new: ModelPolicy, wall_s: float) -> str:
    """Why storing `new` in place of `stored` would drop an active pin ("" when it would not)."""
    if stored is None or not stored.pin_active(wall_s) or new.pinned:
        return ""
    return (
        f"model {stored.model!r} is pinned at {stored.pin_replicas} replicas by {stored.pin_by} ({stored.pin_reason}) and the new policy"
        " does not pin: keep the pin in it, unpin first (`ebbflow policy unpin`), or pass --unpin (gRPC: unpin) to drop it"
    )


def keep_pin(new: ModelPolicy, stored: ModelPolicy | None, wall_s: float) -> ModelPolicy:
    """`new` carrying `stored`'s active pin when `new` has none (a config file re-imported at start keeps a pin set at run time)."""
    if not dropped_pin(stored, new, wall_s):
        return new
    assert stored is not None
    return replace(new, **{name: getattr(stored, name) for name in PIN_FIELDS})


def policy_changes(old: ModelPolicy | None, new: ModelPolicy) -> list[str]:
    """What storing `new` over `old` changes, one `field: old -> new` each (every set field for a new policy)."""
    base = old or ModelPolicy(model=new.model)
    changed = [name for name in POLICY_FIELDS if getattr(base, name) != getattr(new, name)]
    return [f"{name}: {'(default) ' if old is None else ''}{getattr(base, name)!r} -> {getattr(new, name)!r}" for name in changed]


def unknown_models(models: Iterable[str], repository: Collection[str]) -> str:
    """Why policies for `models` cannot be kept ("" when every one is in the model repository)."""
    missing = sorted(set(models) - set(repository))
    if not missing:
        return ""
    known = ", ".join(sorted(repository)) or "none"
    names = ", ".join(repr(m) for m in missing)
    return f"no model {names} in the model repository; its models are: {known} (a policy scales a model the repository serves)"


@dataclass(frozen=True)
class Config:
    router: RouterConfig = field(default_factory=RouterConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    forecaster: ForecasterConfig = field(default_factory=ForecasterConfig)
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    models: tuple[ModelPolicy, ...] = (ModelPolicy(model="llm"), ModelPolicy(model="llm_stream", min_replicas=0, max_replicas=2))


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where} must be true or false, got {value!r}")


def _section(cls: type, raw: Mapping[str, Any] | None, where: str) -> Any:
    return cls(**_typed_values(cls, raw, where))


def _typed_values(cls: type, raw: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """The settings of `raw` converted to the types of `cls`'s fields; ConfigError naming an unknown or mistyped one."""
    raw = dict(raw or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        target = known[name].type
        try:
            if target in ("bool", bool):
                values[name] = _boolean(value, f"{where}.{name}")
            elif target in ("int", int):
                values[name] = int(value)
            elif target in ("float", float):
                values[name] = float(value)
            elif target == "tuple[float, ...]":
                items = value.split(",") if isinstance(value, str) else value
                values[name] = tuple(float(item) for item in items)
            elif target == "tuple[str, ...]":
                items = value.split(",") if isinstance(value, str) else value
                values[name] = tuple(str(item).strip() for item in items if str(item).strip())
            else:
                values[name] = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{name} must be a {target}, got {value!r}") from None
    return values


def _check_ranges(config: Config) -> None:
    c = config.collector
    if not 0.1 <= c.interval_s <= 10:
        raise ConfigError(f"collector.interval_s must be 0.1-10, got {c.interval_s}")
    if not 0 < c.scrape_timeout_s < c.interval_s:
        raise ConfigError("collector.scrape_timeout_s must be > 0 and below collector.interval_s")
    if not c.windows_s or any(not c.interval_s <= w <= c.history_fine_s for w in c.windows_s):
        raise ConfigError(f"collector.windows_s must each lie between interval_s and history_fine_s, got {list(c.windows_s)}")
    if not c.interval_s <= c.history_coarse_step_s <= c.history_fine_s <= c.history_keep_s:
        raise ConfigError("collector: need interval_s <= history_coarse_step_s <= history_fine_s <= history_keep_s")
    if not 0 < c.history_flush_s <= c.history_fine_s:
        raise ConfigError(f"collector.history_flush_s must be in (0, history_fine_s], got {c.history_flush_s}")
    f = config.forecaster
    if not f.resolutions_s or any(r < c.interval_s for r in f.resolutions_s) or list(f.resolutions_s) != sorted(f.resolutions_s):
        raise ConfigError(f"forecaster.resolutions_s must be ascending and each >= collector.interval_s, got {list(f.resolutions_s)}")
    if not 1 <= f.horizon_steps <= 288 or f.refit_every_steps < 1 or f.selection_window_steps < 10 or f.max_history_steps < 100:
        raise ConfigError("forecaster: horizon_steps 1-288, refit_every_steps >= 1, selection_window_steps >= 10, max_history_steps >= 100")
    s = config.scheduler
    if not 1 <= s.load_window_s <= 300 or not 1 <= s.burst_window_s <= 60:
        raise ConfigError(f"scheduler.load_window_s must be 1-300 and scheduler.burst_window_s 1-60, got {s.load_window_s} and {s.burst_window_s}")
    if not 0.1 <= config.router.telemetry_interval_s <= 10:
        raise ConfigError(f"router.telemetry_interval_s must be 0.1-10, got {config.router.telemetry_interval_s}")
    if not 0 < config.actuator.time_scale <= 10:
        raise ConfigError(f"actuator.time_scale must be in (0, 10], got {config.actuator.time_scale}")
    a = config.actuator
    if not 0 < a.crash_backoff_initial_s <= a.crash_backoff_max_s or a.crash_backoff_reset_after_s <= 0:
        raise ConfigError(
            "actuator: crash_backoff_initial_s must be > 0 and <= crash_backoff_max_s, crash_backoff_reset_after_s > 0; "
            f"got {a.crash_backoff_initial_s}, {a.crash_backoff_max_s}, {a.crash_backoff_reset_after_s}"
        )
    if a.replica_log_keep_bytes < 4096:
        raise ConfigError(f"actuator.replica_log_keep_bytes must be >= 4096, got {a.replica_log_keep_bytes}")
    r = config.router
    if r.front not in ("auto", "grpc", "haproxy"):
        raise ConfigError(f"router.front must be auto, grpc or haproxy, got {r.front!r}")
    if not 1 <= r.workers <= 64:
        raise ConfigError(f"router.workers must be 1-64, got {r.workers}")
    if r.hold_timeout_s <= 0 or r.hold_max_requests < 1 or r.hold_max_bytes < 1:
        raise ConfigError("router.hold_timeout_s, hold_max_requests and hold_max_bytes must be positive")
    if r.max_retries < 0 or r.retry_buffer_bytes < 0 or r.eject_after_failures < 1 or r.eject_s < 0:
        raise ConfigError("router.max_retries, retry_buffer_bytes and eject_s must be >= 0 and eject_after_failures >= 1")
    from ebbflow.scheduler.placement import parse_node  # the one parser of node specs

    try:
        names = [parse_node(text).name for text in config.placement.nodes]
    except ValueError as error:
        raise ConfigError(f"placement.nodes: {error}") from None
    if len(set(names)) != len(names):
        raise ConfigError(f"placement.nodes: node names must be unique, got {names}")
    if config.placement.gpu_budget < 0 or config.placement.max_moves_per_hour < 0:
        raise ConfigError("placement.gpu_budget and placement.max_moves_per_hour must be >= 0")
    if not 0 <= config.router.port <= 65535:
        raise ConfigError(f"router.port must be 0-65535, got {config.router.port}")


SECTIONS = tuple(f.name for f in fields(Config) if f.name != "models")
"""The config file's settings sections (every one can be overridden from the environment)."""


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Build a validated Config from a mapping shaped like the YAML file."""
    known = {*SECTIONS, "models"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown top-level section(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    models_raw = raw.get("models")
    models: tuple[ModelPolicy, ...] = Config().models
    if models_raw is not None:
        if not isinstance(models_raw, Mapping):
            raise ConfigError("models must map a model name to its policy")
        models = tuple(replace(ModelPolicy(model=str(name)), **policy_patch(str(name), policy)).validate() for name, policy in models_raw.items())
    config = Config(
        router=_section(RouterConfig, raw.get("router"), "router"),
        collector=_section(CollectorConfig, raw.get("collector"), "collector"),
        forecaster=_section(ForecasterConfig, raw.get("forecaster"), "forecaster"),
        scheduler=_section(SchedulerConfig, raw.get("scheduler"), "scheduler"),
        actuator=_section(ActuatorConfig, raw.get("actuator"), "actuator"),
        placement=_section(PlacementConfig, raw.get("placement"), "placement"),
        models=models,
    )
    _check_ranges(config)
    return config


ENV_PREFIX = "EBBFLOW_"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """EBBFLOW_<SECTION>__<SETTING>=value, e.g. EBBFLOW_ACTUATOR__TIME_SCALE=0.1."""
    overrides: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
            if section in SECTIONS:
                overrides.setdefault(section, {})[name] = value
    return overrides


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply environment overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        raw = loaded
    for section, values in _env_overrides(os.environ if environ is None else environ).items():
        raw[section] = {**(raw.get(section) or {}), **values}
    return parse_config(raw)


def with_router_port(config: Config, port: int) -> Config:
    return replace(config, router=replace(config.router, port=port))
