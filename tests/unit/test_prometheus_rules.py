"""deploy/prometheus: the rules pass `promtool check rules`, their unit tests pass `promtool test rules`, and every
alert has a case where it fires and one where it stays quiet (Debian's prometheus, installed by `make prometheus`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(RULES.glob("*.rules.yaml"))
TEST_FILES = sorted((RULES / "tests").glob("*.yaml"))


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is not installed: run scripts/install_prometheus.sh (make prometheus)"
    return found


def alert_names() -> set[str]:
    names = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["alert"] for rule in group["rules"] if "alert" in rule)
    return names


def test_the_rule_files_are_valid() -> None:
    assert RULE_FILES, f"no *.rules.yaml in {RULES}"
    result = subprocess.run([promtool(), "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_the_rule_unit_tests_pass(test_file: Path) -> None:
    result = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120, cwd=test_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = alert_names()
    assert alerts, "no alerts found"
    assert not alerts - firing, f"alerts with no firing case: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"alerts with no quiet case: {sorted(alerts - quiet)}"
    assert not (firing | quiet) - alerts, f"tests name alerts the rules lack: {sorted((firing | quiet) - alerts)}"


def test_every_alert_has_a_runbook_url_severity_and_summary() -> None:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                name = rule["alert"]
                assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{name}.md", name
                assert rule["labels"]["severity"] in ("page", "ticket", "warning"), name
                assert rule["annotations"].get("summary") and rule["annotations"].get("description"), name
