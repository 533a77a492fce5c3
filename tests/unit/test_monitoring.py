"""`ebbflow up --prometheus`'s pure parts: the file_sd targets from NATS's announcements and registry, the config
Prometheus gets (checked by the real `promtool check config`), atomic rewrites, and a clear error without the binary."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ebbflow.cli import main
from ebbflow.monitoring import RULES_DIR, prometheus_config, scrape_targets, write_if_changed
from ebbflow.v1 import discovery_pb2, registry_pb2


def service(name: str, metrics: str) -> discovery_pb2.ServiceInstance:
    return discovery_pb2.ServiceInstance(service=name, instance_id=f"{name}-1", metrics_address=metrics)


def replica(replica_id: str, state: int, port: int) -> registry_pb2.ReplicaEntry:
    return registry_pb2.ReplicaEntry(model="llm", replica_id=replica_id, host="127.0.0.1", metrics_port=port, state=state)  # type: ignore[arg-type]


def test_targets_name_each_service_and_each_live_replica_with_the_labels_the_rules_use() -> None:
    groups = scrape_targets(
        [service("router", "127.0.0.1:9001"), service("scheduler", "127.0.0.1:9002"), service("collector", "")],
        [
            replica("a", registry_pb2.REPLICA_STATE_READY, 8002),
            replica("b", registry_pb2.REPLICA_STATE_STARTING, 8012),
            replica("c", registry_pb2.REPLICA_STATE_STOPPED, 8022),
            replica("d", registry_pb2.REPLICA_STATE_READY, 0),
        ],
    )
    assert groups == sorted(groups, key=lambda g: (str(g["labels"]), str(g["targets"])))
    assert {(g["targets"][0], tuple(sorted(g["labels"].items()))) for g in groups} == {  # type: ignore[index, union-attr]
        ("127.0.0.1:9001", (("job", "ebbflow"), ("service", "router"))),
        ("127.0.0.1:9002", (("job", "ebbflow"), ("service", "scheduler"))),
        ("127.0.0.1:8002", (("job", "triton"), ("replica", "a"))),
        ("127.0.0.1:8012", (("job", "triton"), ("replica", "b"))),
    }, "stopped replicas and entries without an address are left out"


def test_the_config_passes_promtool_with_the_rules_and_targets(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run scripts/install_prometheus.sh (make prometheus)"
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps(scrape_targets([service("router", "127.0.0.1:9001")], [])))
    rules = sorted(RULES_DIR.glob("*.rules.yaml"))
    assert rules
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(targets, rules, interval_s=2.0))
    settings = json.loads(config.read_text())
    assert settings["global"] == {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"}
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_rewrites_are_atomic_and_skipped_when_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    assert write_if_changed(path, "[]\n")
    assert not write_if_changed(path, "[]\n")
    assert write_if_changed(path, '[{"targets": []}]\n') and path.read_text() == '[{"targets": []}]\n'
    assert [p.name for p in tmp_path.iterdir()] == ["targets.json"], "no temporary file left behind"


def test_up_with_prometheus_but_no_binary_is_a_clear_error_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code = main(["up", "--prometheus", "--state-dir", str(tmp_path / "state")])
    assert code == 2
    assert "--prometheus needs the prometheus binary" in capsys.readouterr().err
    assert not (tmp_path / "state").exists(), "nothing was started or created"
