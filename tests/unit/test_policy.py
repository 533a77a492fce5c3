"""ebbflow.policy: one home for what a policy is, below every service, and one table for its proto form."""

import ast
import sys
from dataclasses import fields, replace
from pathlib import Path

from ebbflow.policy import (
    POLICY_FIELDS,
    PROTO_CONVERSIONS,
    ModelPolicy,
    patch_from_proto,
    patch_to_proto,
    policy_from_proto,
    policy_to_proto,
)
from ebbflow.v1 import policy_pb2

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "ebbflow"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_policy_sits_below_every_service_it_imports_only_protos_errors_and_the_stdlib():
    allowed = ("ebbflow.v1", "ebbflow.runtime.errors", "ebbflow.runtime.typed", "google.protobuf")
    for module in ("policy.py", "runtime/typed.py"):
        outside = {
            name for name in _imports(PACKAGE / module)
            if name.split(".")[0] not in sys.stdlib_module_names and not any(name == a or name.startswith(a + ".") for a in allowed)
        }
        assert not outside, f"{module} imports {outside}"
    assert "ebbflow.runtime.errors" in _imports(PACKAGE / "runtime" / "typed.py")


def test_the_config_loader_no_longer_defines_a_policy():
    source = (PACKAGE / "runtime" / "config.py").read_text()
    assert "class ModelPolicy" not in source and "def validate" not in source and "def merge_policy" not in source


def test_every_field_converts_both_ways_through_the_one_table():
    assert set(PROTO_CONVERSIONS) == set(POLICY_FIELDS) == {f.name for f in policy_pb2.ScalingPolicy.DESCRIPTOR.fields}
    # Every field away from its default, so a field converted one way only shows.
    policy = ModelPolicy(
        model="llm", min_replicas=2, max_replicas=9, target_in_flight_per_replica=3.5, scale_down_delay_s=40, instances_per_replica=2,
        max_batch_size=16, routing="round_robin", forecast_quantile=0.95, lead_s=12, scale_up_delay_s=5, max_scale_up_step=3,
        max_scale_up_percent=50, max_scale_down_step=1, max_scale_down_percent=10, target_utilization=0.5, mode="advisory",
        pinned=True, pin_replicas=4, pin_by="ops", pin_reason="launch", pin_until_unix_s=1e9, panic_threshold=3.0, panic_hold_s=30,
        slo_ttft_s=2.0, slo_tpot_s=0.1, slo_latency_s=5.0, slo_percentile=99.5, scale_to_zero_idle_s=0, vertical_auto=True,
        vertical_max_instances=3, vertical_max_batch_size=64, gpu_memory_gb_per_instance=20, priority=7, scale_tolerance=0.2,
        activation_probability=0.3, shed_in_flight_per_replica=6,
    ).validate()
    defaults = ModelPolicy(model="llm")
    same = [f.name for f in fields(ModelPolicy) if f.name != "model" and getattr(policy, f.name) == getattr(defaults, f.name)]
    assert same == ["scale_to_zero_idle_s"], same  # needs min_replicas 0; zero is its default
    message = policy_to_proto(policy)
    assert message.routing == policy_pb2.ROUTING_POLICY_ROUND_ROBIN and message.mode == policy_pb2.POLICY_MODE_ADVISORY
    assert policy_from_proto(message) == policy
    changes = {"routing": "power_of_two", "mode": "active", "max_replicas": 5}
    patch = patch_to_proto("llm", changes)
    assert patch.model == "llm" and patch_from_proto(patch, changes) == changes
    assert policy_from_proto(policy_to_proto(replace(defaults, routing="least_outstanding"))) == defaults


def test_the_wire_form_is_the_field_by_field_copy():
    """A policy's bytes are what setting each proto field from its ModelPolicy field gives (the enums by name)."""
    policy = ModelPolicy(model="llm", max_replicas=6, routing="power_of_two", mode="advisory", slo_ttft_s=2.0, priority=-3)
    expected = policy_pb2.ScalingPolicy()
    for name in POLICY_FIELDS:
        value = getattr(policy, name)
        if name == "routing":
            value = policy_pb2.ROUTING_POLICY_POWER_OF_TWO
        elif name == "mode":
            value = policy_pb2.POLICY_MODE_ADVISORY
        setattr(expected, name, value)
    assert policy_to_proto(policy).SerializeToString() == expected.SerializeToString()
