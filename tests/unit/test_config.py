"""Config validation: bad input is a precise error."""

from pathlib import Path

import pytest

from ebbflow.runtime.config import load_config, parse_config
from ebbflow.runtime.errors import ConfigError


def test_defaults_are_valid():
    config = parse_config({})
    assert config.router.port == 8001
    assert [m.model for m in config.models] == ["llm", "llm_stream"]


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"models": {"llm": {"min_replicas": 3, "max_replicas": 2}}}, "max_replicas must be >= max"),
        ({"models": {"llm": {"target_in_flight_per_replica": 0}}}, "target_in_flight_per_replica must be > 0"),
        ({"models": {"llm": {"replicas": 2}}}, "unknown setting(s) in models.llm: replicas"),
        ({"models": {"bad name!": {}}}, "model name"),
        ({"router": {"port": "eighty"}}, "router.port must be a int"),
        ({"collector": {"interval_s": 1, "scrape_timeout_s": 2}}, "scrape_timeout_s"),
        ({"routers": {}}, "unknown top-level section"),
    ],
)
def test_invalid_settings_name_the_field(raw, message):
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert message in str(error.value)


def test_environment_overrides_the_file(tmp_path: Path):
    path = tmp_path / "ebbflow.yaml"
    path.write_text("actuator:\n  time_scale: 0.5\n")
    config = load_config(path, environ={"EBBFLOW_ACTUATOR__TIME_SCALE": "0.1"})
    assert config.actuator.time_scale == 0.1


def test_unreadable_or_invalid_files_are_clear(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})


def test_demo_config_is_valid():
    config = load_config(Path(__file__).parents[2] / "deploy" / "demo.yaml", environ={})
    assert config.models[0].max_replicas > config.models[0].min_replicas


def test_a_patch_changes_only_the_fields_given_and_is_validated_as_a_whole():
    from ebbflow.policy import ModelPolicy, merge_policy, policy_changes, policy_patch

    stored = ModelPolicy(model="llm", min_replicas=2, max_replicas=8, slo_ttft_s=2.0, routing="round_robin")
    patched = merge_policy(stored, policy_patch("llm", {"max_replicas": "6", "routing": "power_of_two"}))
    assert (patched.min_replicas, patched.max_replicas, patched.slo_ttft_s, patched.routing) == (2, 6, 2.0, "power_of_two")
    assert policy_changes(stored, patched) == ["max_replicas: 8 -> 6", "routing: 'round_robin' -> 'power_of_two'"]
    with pytest.raises(ConfigError, match="max_replicas must be >= max"):
        merge_policy(stored, {"min_replicas": 9})
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) in models.llm: replicas"):
        policy_patch("llm", {"replicas": 3})
    with pytest.raises(ConfigError, match="models.llm.max_replicas must be a int"):
        policy_patch("llm", {"max_replicas": "many"})
    with pytest.raises(ConfigError, match="models.llm must map policy fields to values"):
        policy_patch("llm", [1, 2])
    with pytest.raises(ConfigError, match="leave it out"):
        policy_patch("llm", {"model": "other"})


def test_a_pin_is_dropped_only_on_purpose():
    from dataclasses import replace

    from ebbflow.policy import ModelPolicy, dropped_pin, keep_pin

    pinned = ModelPolicy(model="llm", pinned=True, pin_replicas=4, pin_by="alice", pin_reason="incident 42", pin_until_unix_s=1000.0)
    plain = ModelPolicy(model="llm", max_replicas=6)
    assert "pinned at 4 replicas by alice (incident 42)" in dropped_pin(pinned, plain, wall_s=500.0)
    assert dropped_pin(pinned, plain, wall_s=1500.0) == ""  # the pin has ended
    assert dropped_pin(pinned, replace(plain, pinned=True, pin_replicas=1, pin_by="bob", pin_reason="x"), 500.0) == ""
    assert dropped_pin(None, plain, 500.0) == ""
    kept = keep_pin(plain, pinned, 500.0)
    assert kept.max_replicas == 6 and (kept.pinned, kept.pin_replicas, kept.pin_by, kept.pin_until_unix_s) == (True, 4, "alice", 1000.0)
    assert keep_pin(plain, pinned, 1500.0) is plain


def test_the_target_is_spelled_one_way():
    from ebbflow.policy import ModelPolicy, unknown_models

    assert ModelPolicy(model="llm", target_in_flight_per_replica=4).sizing_text == "in_flight_target 4"
    utilisation = ModelPolicy(model="llm", target_utilization=0.6)
    assert utilisation.sizing_text == "in_flight_target target_utilization 0.6 x instances x max_batch_size (the model's config)"
    resolved = ModelPolicy(model="llm", target_utilization=0.6, instances_per_replica=2, max_batch_size=8)
    assert resolved.sizing_text == "in_flight_target 9.6 (target_utilization 0.6 x 2 instances x max_batch_size 8)"
    assert ModelPolicy(model="llm", slo_ttft_s=2, slo_tpot_s=0.1).sizing_text == "SLO p99 TTFT <= 2 s, TPOT <= 0.1 s"
    assert unknown_models(["llm"], {"llm", "llm_stream"}) == ""
    assert unknown_models(["chat", "llm"], {"llm", "llm_stream"}).startswith("no model 'chat' in the model repository; its models are: llm, llm_stream")
    assert "its models are: none" in unknown_models(["llm"], set())
