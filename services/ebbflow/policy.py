"""What a model's scaling policy is: its fields, defaults, validation, derived values and proto form.

One home for the policy, imported by the scheduler, the CLI and the config
loader alike. It sits beside ebbflow.runtime, below every service, and
imports only the generated protos, the error hierarchy and the typed-settings
reader: what a policy means must not depend on who reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Collection, Iterable, Mapping

from google.protobuf.json_format import MessageToDict

from ebbflow.runtime.errors import ConfigError
from ebbflow.runtime.typed import typed_values
from ebbflow.v1 import policy_pb2


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
    shed_in_flight_per_replica: float = 0.0
    """Overload: at max_replicas ready, a request arriving with this many per ready replica already in flight at the
    router is refused at once (RESOURCE_EXHAUSTED / 429) instead of queueing past the SLO (router.shedding); 0: never."""

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
        if self.shed_in_flight_per_replica < 0:
            problems.append(f"shed_in_flight_per_replica must be >= 0 (0: never shed), got {self.shed_in_flight_per_replica}")
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
    return {name: value for name, value in typed_values(ModelPolicy, raw, f"models.{model}").items() if name != "model"}


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


# ---- proto form ----


def _same(value: Any) -> Any:
    return value


_ENUMS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "routing": (routing_to_proto, routing_from_proto),
    "mode": (mode_to_proto, mode_from_proto),
}

PROTO_CONVERSIONS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {name: _ENUMS.get(name, (_same, _same)) for name in POLICY_FIELDS}
"""Each policy field's conversion (to ScalingPolicy, from it): the fields have the same names there, and the enums
are config names here. The one table both directions read, so a new field cannot be converted one way only."""


def patch_to_proto(model: str, changes: Mapping[str, Any]) -> policy_pb2.ScalingPolicy:
    """A ScalingPolicy carrying only `changes` (ModelPolicy values), for a SetPolicy patch with their names as the mask."""
    message = policy_pb2.ScalingPolicy(model=model)
    for name, value in changes.items():
        to_proto, _ = PROTO_CONVERSIONS.get(name, (_same, _same))
        setattr(message, name, to_proto(value))
    return message


def patch_from_proto(message: policy_pb2.ScalingPolicy, names: Iterable[str]) -> dict[str, Any]:
    """The named fields of a ScalingPolicy as ModelPolicy values (enums as their config names), unvalidated."""
    values: dict[str, Any] = {}
    for name in names:
        _, from_proto = PROTO_CONVERSIONS.get(name, (_same, _same))
        values[name] = from_proto(getattr(message, name))
    return values


def policy_to_proto(policy: ModelPolicy) -> policy_pb2.ScalingPolicy:
    """The proto has the same field names as ModelPolicy; routing and mode are enums there."""
    return patch_to_proto(policy.model, {name: getattr(policy, name) for name in POLICY_FIELDS})


def policy_from_proto(message: policy_pb2.ScalingPolicy) -> ModelPolicy:
    """Raises ConfigError naming every invalid field."""
    return ModelPolicy(**patch_from_proto(message, POLICY_FIELDS)).validate()


def policy_json(message: policy_pb2.ScalingPolicy) -> str:
    """A stored policy as `ebbflow policy get` prints it: every field, zeros included, by its proto name."""
    return json.dumps(MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True), indent=2)
