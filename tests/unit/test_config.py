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
