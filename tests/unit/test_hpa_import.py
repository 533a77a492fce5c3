"""Kubernetes HPA manifests translated into policies; what cannot be translated names its field."""

import copy
from dataclasses import replace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ebbflow.scheduler.core import DecisionInputs, LoadView, ScalingState, decide
from ebbflow.scheduler.hpa import HpaError, policy_from_hpa

SEED = yaml.safe_load(
    """
apiVersion: autoscaling/v2beta1
kind: HorizontalPodAutoscaler
metadata: {name: llm-service}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llm-service}
  minReplicas: 3
  maxReplicas: 10
  metrics:
  - type: Resource
    resource: {name: cpu, targetAverageUtilization: 60}
"""
)

V2 = yaml.safe_load(
    """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: chat}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: chat}
  minReplicas: 1
  maxReplicas: 20
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 15
      policies:
      - {type: Pods, value: 4, periodSeconds: 60}
      - {type: Percent, value: 100, periodSeconds: 60}
    scaleDown:
      stabilizationWindowSeconds: 120
      policies:
      - {type: Pods, value: 1, periodSeconds: 60}
  metrics:
  - type: Pods
    pods:
      metric: {name: ebbflow_model_in_flight}
      target: {type: AverageValue, averageValue: "6"}
"""
)


def test_the_seed_manifest_becomes_bounds_and_a_utilisation_target():
    policy, notes = policy_from_hpa(SEED)
    assert policy.model == "llm-service" and (policy.min_replicas, policy.max_replicas) == (3, 10)
    assert policy.target_utilization == 0.6
    # With the model's config resolved (the scheduler does it from the `models` bucket): 1 instance x batch 8.
    assert replace(policy, instances_per_replica=1, max_batch_size=8).in_flight_target == pytest.approx(0.6 * 8)
    assert (policy.scale_up_delay_s, policy.scale_down_delay_s) == (0.0, 300.0)  # Kubernetes' defaults
    assert any("approximation" in n or "instances_per_replica x max_batch_size" in n for n in notes)


def test_v2_behavior_and_a_pods_metric_map_to_windows_steps_and_an_in_flight_target():
    policy, _ = policy_from_hpa(V2, model="llm")
    assert policy.model == "llm" and policy.target_in_flight_per_replica == 6 and policy.target_utilization == 0
    assert (policy.scale_up_delay_s, policy.scale_down_delay_s) == (15.0, 120.0)
    assert (policy.max_scale_up_step, policy.max_scale_up_percent, policy.max_scale_down_step) == (4, 100.0, 1)


def test_imported_limits_shape_decisions():
    policy, _ = policy_from_hpa(V2, model="llm")
    fresh = lambda in_flight: LoadView(fresh=True, in_flight=in_flight, arrival_rps=0.0)  # noqa: E731
    state = ScalingState()
    decision, state = decide(DecisionInputs(fresh(10.0), policy, state, current_replicas=2, now_s=0.0))
    assert decision.replicas == 2
    decision, state = decide(DecisionInputs(fresh(100.0), policy, state, current_replicas=2, now_s=5.0))
    assert decision.replicas == 2, "scale-up waits until its 15 s window holds only higher recommendations"
    decision, state = decide(DecisionInputs(fresh(100.0), policy, state, current_replicas=2, now_s=16.0))
    assert decision.replicas == 6 and "limited to +4" in decision.reason  # max(4 pods, 100 % of 2)
    decision, state = decide(DecisionInputs(fresh(0.0), policy, state, current_replicas=6, now_s=200.0))
    assert decision.replicas == 5 and "limited to -1" in decision.reason


@pytest.mark.parametrize(
    "change,field",
    [
        ({"kind": "Deployment"}, "kind"),
        ({"apiVersion": "autoscaling/v1"}, "apiVersion"),
        ({"spec": {**SEED["spec"], "metrics": [{"type": "Object", "object": {}}]}}, "spec.metrics[0].type"),
        ({"spec": {**SEED["spec"], "metrics": [{"type": "Resource", "resource": {"name": "gpu", "targetAverageUtilization": 50}}]}}, "spec.metrics[0].resource.name"),
        ({"spec": {**SEED["spec"], "metrics": [{"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": 3}}]}}, "spec.metrics[0].pods"),
        ({"spec": {**SEED["spec"], "metrics": SEED["spec"]["metrics"] * 2}}, "spec.metrics[1]"),
        ({"spec": {**SEED["spec"], "behavior": {"scaleUp": {"selectPolicy": "Min"}}}}, "spec.behavior.scaleUp.selectPolicy"),
        ({"spec": {k: v for k, v in SEED["spec"].items() if k != "maxReplicas"}}, "spec.maxReplicas"),
        ({"spec": {**SEED["spec"], "minReplicas": 12}}, "max_replicas"),
    ],
)
def test_what_cannot_be_translated_names_its_field(change, field):
    with pytest.raises(HpaError, match=field.replace("[", r"\[").replace("]", r"\]")):
        policy_from_hpa({**SEED, **change})


@pytest.mark.parametrize(
    "text,field",
    [
        ("- just\n- a list\n", "the manifest must be a mapping"),
        ("plain text", "the manifest must be a mapping"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n", "spec is missing"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: [1, 2]\n", "spec must be a mapping, got a list"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: [3], scaleTargetRef: {name: llm}}\n", "spec.maxReplicas must be a number, got a list"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: lots, scaleTargetRef: {name: llm}}\n", "spec.maxReplicas must be a number, got 'lots'"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, minReplicas: 1.5, scaleTargetRef: {name: llm}}\n", "spec.minReplicas must be a whole number"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, minReplicas: true, scaleTargetRef: {name: llm}}\n", "spec.minReplicas must be a number, got a boolean"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: [llm]}\n", "spec.scaleTargetRef must be a mapping, got a list"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: [llm]}}\n", "spec.scaleTargetRef.name must be a string"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, metrics: {type: Resource}}\n", "spec.metrics must be a list, got dict"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, metrics: [cpu]}\n", r"spec.metrics\[0\] must be a mapping, got a string"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, behavior: {scaleUp: {policies: {type: Pods}}}}\n", "spec.behavior.scaleUp.policies must be a list"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, behavior: {scaleDown: {stabilizationWindowSeconds: soon}}}\n", "spec.behavior.scaleDown.stabilizationWindowSeconds must be a number"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, behavior: {scaleUp: {policies: [{type: Pods, value: [2]}]}}}\n", r"spec.behavior.scaleUp.policies\[0\].value must be a number"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, metrics: [{type: Resource, resource: {name: cpu, target: {averageUtilization: high}}}]}\n", "averageUtilization must be a number"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {maxReplicas: 4, scaleTargetRef: {name: llm}, metrics: [{type: Pods, pods: {metric: {name: in_flight}, target: {averageValue: [5]}}}]}\n", "target.averageValue"),
    ],
)
def test_a_malformed_manifest_is_an_error_naming_the_field_never_a_crash(text, field):
    """Whatever YAML arrives, the translation raises HpaError (INVALID_ARGUMENT at the API), not TypeError (INTERNAL)."""
    with pytest.raises(HpaError, match=field):
        policy_from_hpa(yaml.safe_load(text))


_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["type", "name", "value", "target", "pods", "resource"]), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _with(value, path, junk):
    if not path:
        return junk
    copied = copy.deepcopy(value)
    node = copied
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = junk
    return copied


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_part_of_a_manifest_replaced_by_junk_gives_a_policy_or_an_hpa_error(data):
    base = data.draw(st.sampled_from([SEED, V2]))
    path = data.draw(st.sampled_from(list(_paths(base))))
    manifest = _with(base, path, data.draw(_JUNK))
    try:
        policy_from_hpa(manifest)
    except HpaError:
        pass


def test_the_preview_states_the_target_as_policy_list_and_decisions_do():
    policy, notes = policy_from_hpa(SEED, model="llm", verticals={"llm": (1, 8)})
    assert "sizing: in_flight_target 4.8 (target_utilization 0.6 x 1 instances x max_batch_size 8)" in notes
    assert replace(policy, instances_per_replica=1, max_batch_size=8).in_flight_target_text in notes[-1]
    _, notes = policy_from_hpa(V2, model="llm")
    assert notes[-1] == "sizing: in_flight_target 6"
