"""Translate a Kubernetes HorizontalPodAutoscaler into an ebbflow policy.

Accepted: apiVersion autoscaling/v2, v2beta2 and v2beta1, as a mapping
(YAML or JSON parsed by the caller). Mapping, with the approximations said in
the returned notes:
- minReplicas (default 1) and maxReplicas -> bounds;
- behavior.scaleUp/scaleDown.stabilizationWindowSeconds -> scale_up_delay_s /
  scale_down_delay_s (Kubernetes defaults: 0 s up, 300 s down);
- behavior.*.policies: type Pods -> max step per decision, type Percent ->
  max percent per decision (periodSeconds is read as "per decision";
  selectPolicy Max, the default, takes the larger limit; Min and Disabled
  are refused);
- a Resource metric (cpu or memory) with an average utilisation target X ->
  target_utilization X/100 of a replica's capacity, where capacity is
  instances_per_replica x max_batch_size requests in flight (the documented
  approximation: a GPU replica is "fully utilised" when every instance runs
  a full batch);
- a Pods or External metric with an AverageValue target on an ebbflow metric
  that counts in-flight requests -> target_in_flight_per_replica;
- anything else -> an error naming the field.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping

from ebbflow.policy import ModelPolicy
from ebbflow.runtime.errors import ConfigError

VERSIONS = ("autoscaling/v2", "autoscaling/v2beta2", "autoscaling/v2beta1")
IN_FLIGHT_METRICS = ("in_flight", "ebbflow_model_in_flight", "ebbflow_router_in_flight", "ebbflow_model_window_in_flight")
K8S_SCALE_DOWN_WINDOW_S = 300.0


class HpaError(ConfigError):
    """The manifest cannot be translated; the message names the field."""


def _quantity(value: Any, field: str) -> float:
    """A Kubernetes quantity: 8, "8", "500m", "1.5k"."""
    text = str(value).strip()
    suffixes = {"m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
    try:
        if text and text[-1] in suffixes:
            return float(text[:-1]) * suffixes[text[-1]]
        return float(text)
    except ValueError:
        raise HpaError(f"{field}: {value!r} is not a quantity") from None


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise HpaError(f"{field} must be a mapping, got {_kind(value)} ({value!r})")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise HpaError(f"{field} must be a list, got {_kind(value)} ({value!r})")
    return value


def _number(value: Any, field: str) -> float:
    """A plain number (YAML may give a string of one); booleans and anything else name the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HpaError(f"{field} must be a number, got {_kind(value)} ({value!r})")
    try:
        number = float(value)
    except ValueError:
        raise HpaError(f"{field} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise HpaError(f"{field} must be a finite number, got {value!r}")
    return number


def _count(value: Any, field: str) -> int:
    number = _number(value, field)
    if number != int(number) or number < 0:
        raise HpaError(f"{field} must be a whole number >= 0, got {value!r}")
    return int(number)


def _name(value: Any, field: str) -> str:
    if value is not None and not isinstance(value, str):
        raise HpaError(f"{field} must be a string, got {_kind(value)} ({value!r})")
    return value or ""


def _behavior(policy: ModelPolicy, behavior: Mapping[str, Any], notes: list[str]) -> ModelPolicy:
    changes: dict[str, Any] = {}
    for direction, window_field, step_field, percent_field in (
        ("scaleUp", "scale_up_delay_s", "max_scale_up_step", "max_scale_up_percent"),
        ("scaleDown", "scale_down_delay_s", "max_scale_down_step", "max_scale_down_percent"),
    ):
        rules = _mapping(behavior.get(direction), f"spec.behavior.{direction}")
        if "stabilizationWindowSeconds" in rules:
            changes[window_field] = _number(rules["stabilizationWindowSeconds"], f"spec.behavior.{direction}.stabilizationWindowSeconds")
        select = rules.get("selectPolicy", "Max")
        if select != "Max":
            raise HpaError(f"spec.behavior.{direction}.selectPolicy: {select!r} is not supported (only Max, the default)")
        for index, rule in enumerate(_list(rules.get("policies"), f"spec.behavior.{direction}.policies")):
            where = f"spec.behavior.{direction}.policies[{index}]"
            rule = _mapping(rule, where)
            kind, value = rule.get("type"), rule.get("value")
            if value is None:
                raise HpaError(f"{where}.value is missing")
            if kind == "Pods":
                changes[step_field] = max(_count(value, f"{where}.value"), changes.get(step_field, 0))
            elif kind == "Percent":
                changes[percent_field] = max(_number(value, f"{where}.value"), changes.get(percent_field, 0.0))
            else:
                raise HpaError(f"{where}.type: {kind!r} is not Pods or Percent")
            if "periodSeconds" in rule:
                notes.append(f"{where}.periodSeconds={rule['periodSeconds']} is read as 'per decision'")
    return replace(policy, **changes)


def _metric(policy: ModelPolicy, metric: Mapping[str, Any], index: int, notes: list[str]) -> ModelPolicy:
    where = f"spec.metrics[{index}]"
    kind = metric.get("type")
    if kind == "Resource":
        resource = _mapping(metric.get("resource"), f"{where}.resource")
        name = resource.get("name")
        if name not in ("cpu", "memory"):
            raise HpaError(f"{where}.resource.name: {name!r} is not cpu or memory")
        target = _mapping(resource.get("target"), f"{where}.resource.target")
        utilization = resource.get("targetAverageUtilization", target.get("averageUtilization"))  # v2beta1, v2
        if utilization is None:
            raise HpaError(f"{where}.resource: only an average utilisation target is understood (targetAverageUtilization or target.averageUtilization)")
        utilization = _number(utilization, f"{where}.resource.target.averageUtilization")
        fraction = utilization / 100
        if not 0 < fraction <= 1:
            raise HpaError(f"{where}: a utilisation target of {utilization} % is outside (0, 100]")
        notes.append(
            f"{where}: {name} utilisation {utilization:g} % -> target_utilization {fraction:g} of instances_per_replica x max_batch_size in flight"
        )
        return replace(policy, target_utilization=fraction)
    if kind in ("Pods", "External"):
        block = _mapping(metric.get(kind.lower()), f"{where}.{kind.lower()}")
        name = block.get("metricName") or _mapping(block.get("metric"), f"{where}.{kind.lower()}.metric").get("name")  # v2beta1, v2
        if name not in IN_FLIGHT_METRICS:
            raise HpaError(f"{where}.{kind.lower()}: metric {name!r} is not one ebbflow measures per replica (known: {', '.join(IN_FLIGHT_METRICS)})")
        target = _mapping(block.get("target"), f"{where}.{kind.lower()}.target")
        value = block.get("targetAverageValue", target.get("averageValue"))
        if value is None:
            raise HpaError(f"{where}.{kind.lower()}: only an AverageValue target is understood")
        per_replica = _quantity(value, f"{where}.{kind.lower()}.target.averageValue")
        if not per_replica > 0:
            raise HpaError(f"{where}: the average value must be > 0")
        notes.append(f"{where}: {name} average {per_replica:g} -> target_in_flight_per_replica {per_replica:g}")
        return replace(policy, target_in_flight_per_replica=per_replica, target_utilization=0.0)
    raise HpaError(f"{where}.type: {kind!r} is not understood (Resource, Pods or External)")


def policy_from_hpa(
    manifest: Mapping[str, Any], model: str = "", base: ModelPolicy | None = None, verticals: Mapping[str, tuple[int, int]] | None = None
) -> tuple[ModelPolicy, list[str]]:
    """The policy and notes on how it was translated; HpaError naming the field when it cannot be.

    `verticals`: each model's (instances, max batch size) from its config, to state a utilisation target in requests."""
    if not isinstance(manifest, Mapping):
        raise HpaError(f"the manifest must be a mapping (one HorizontalPodAutoscaler object), got {_kind(manifest)}")
    if manifest.get("kind") != "HorizontalPodAutoscaler":
        raise HpaError(f"kind: {manifest.get('kind')!r} is not HorizontalPodAutoscaler")
    version = manifest.get("apiVersion")
    if version not in VERSIONS:
        raise HpaError(f"apiVersion: {version!r} is not one of {', '.join(VERSIONS)}")
    if manifest.get("spec") is None:
        raise HpaError("spec is missing (it holds scaleTargetRef, maxReplicas and metrics)")
    spec = _mapping(manifest.get("spec"), "spec")
    target = _mapping(spec.get("scaleTargetRef"), "spec.scaleTargetRef")
    name = model or _name(target.get("name"), "spec.scaleTargetRef.name") or _name(_mapping(manifest.get("metadata"), "metadata").get("name"), "metadata.name")
    if not name:
        raise HpaError("spec.scaleTargetRef.name is missing (or pass the model name)")
    if "maxReplicas" not in spec:
        raise HpaError("spec.maxReplicas is missing (it is required by Kubernetes too)")
    notes = [f"model {name!r} from {'the request' if model else 'spec.scaleTargetRef.name'}"]
    policy = replace(base or ModelPolicy(model=name), model=name)
    policy = replace(
        policy,
        min_replicas=_count(spec.get("minReplicas", 1), "spec.minReplicas"),
        max_replicas=_count(spec["maxReplicas"], "spec.maxReplicas"),
        scale_up_delay_s=0.0,
        scale_down_delay_s=K8S_SCALE_DOWN_WINDOW_S,
        panic_threshold=0.0,  # HPA has no panic mode; set one on the policy to add it
    )
    notes.append(f"bounds {policy.min_replicas}-{policy.max_replicas} replicas; stabilisation 0 s up / {K8S_SCALE_DOWN_WINDOW_S:g} s down unless spec.behavior says otherwise")
    policy = _behavior(policy, _mapping(spec.get("behavior"), "spec.behavior"), notes)
    metrics = spec.get("metrics")
    if "targetCPUUtilizationPercentage" in spec:  # autoscaling/v1 style field inside a newer object
        metrics = [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": spec["targetCPUUtilizationPercentage"]}}]
    if not metrics:
        metrics = [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 80}}]
        notes.append("no spec.metrics: Kubernetes' default of 80 % CPU utilisation")
    metrics = _list(metrics, "spec.metrics")
    if len(metrics) > 1:
        raise HpaError(f"spec.metrics[1]: ebbflow scales on one target per model; {len(metrics)} metrics given")
    policy = _metric(policy, _mapping(metrics[0], "spec.metrics[0]"), 0, notes)
    try:
        policy = policy.validate()
    except ConfigError as error:
        raise HpaError(str(error)) from None
    shown = policy
    if (verticals or {}).get(policy.model) and not (policy.instances_per_replica and policy.max_batch_size):
        instances, max_batch = (verticals or {})[policy.model]
        shown = replace(policy, instances_per_replica=policy.instances_per_replica or instances, max_batch_size=policy.max_batch_size or max_batch)
    notes.append(f"sizing: {shown.sizing_text}")
    return policy, notes
