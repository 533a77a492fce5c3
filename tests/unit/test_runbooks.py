"""docs/runbooks and the alert rules stay in step: every runbook_url resolves to a file, every alert has a runbook and
every runbook (but the task runbooks router.md and scheduler.md, linked from the index) an alert; each runbook has
the sections an operator looks for, and the commands it tells them to run exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ebbflow.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
TASK_RUNBOOKS = {"README.md", "router.md", "scheduler.md"}
SECTIONS = ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Confirm it is over")


def alerts() -> dict[str, set[str]]:
    """Alert name -> the runbook_urls its rules give."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.setdefault(rule["alert"], set()).add(rule["annotations"]["runbook_url"])
    return found


def alert_runbooks() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p.name not in TASK_RUNBOOKS)


def test_every_runbook_url_resolves_to_a_file_named_after_its_alert() -> None:
    for name, urls in alerts().items():
        for url in urls:
            assert (ROOT / url).is_file(), f"{name}: runbook_url {url} is not a file"
            assert Path(url).name == f"{name}.md", f"{name}: runbook_url {url} names another alert's runbook"


def test_every_runbook_has_an_alert_and_the_index_lists_them_all() -> None:
    names = set(alerts())
    runbooks = {p.stem for p in alert_runbooks()}
    assert runbooks == names, f"runbooks without an alert: {sorted(runbooks - names)}; alerts without a runbook: {sorted(names - runbooks)}"
    index = (RUNBOOKS / "README.md").read_text()
    for name in names | {"router", "scheduler"}:
        assert f"({name}.md)" in index, f"docs/runbooks/README.md does not link {name}.md"


@pytest.mark.parametrize("runbook", alert_runbooks(), ids=lambda p: p.stem)
def test_each_runbook_says_what_it_means_how_to_diagnose_mitigate_and_confirm(runbook: Path) -> None:
    text = runbook.read_text()
    assert text.startswith(f"# {runbook.stem}\n")
    positions = [text.find(section + "\n") for section in SECTIONS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), f"{runbook.name} needs, in order: {SECTIONS}"
    diagnosis = text[positions[2] : positions[3]]
    assert "`ebbflow " in diagnosis and "grpcurl -plaintext" in diagnosis, f"{runbook.name}: diagnosis needs ebbflow and grpcurl commands"


def test_the_commands_and_methods_the_runbooks_name_exist() -> None:
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    commands = set(subcommands)  # type: ignore[arg-type]
    policy_actions = set(next(a for a in subcommands["policy"]._actions if a.dest == "action").choices)  # type: ignore[index]
    protos = "\n".join(p.read_text() for p in (ROOT / "protos").rglob("*.proto"))
    methods = set(re.findall(r"service (\w+) \{", protos))
    rpcs = {(service, rpc) for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", protos, re.S) for rpc in re.findall(r"rpc (\w+)\(", body)}
    assert methods
    for runbook in [*alert_runbooks(), RUNBOOKS / "README.md"]:
        text = runbook.read_text()
        for command in re.findall(r"`ebbflow ([a-z-]+)", text):
            assert command in commands, f"{runbook.name}: `ebbflow {command}` is not a command"
        for policy_action in re.findall(r"`ebbflow policy ([a-z]+)", text):
            assert policy_action in policy_actions, f"{runbook.name}: `ebbflow policy {policy_action}` is not an action"
        for service, rpc in re.findall(r"ebbflow\.v1\.(\w+)/(\w+)", text):
            assert (service, rpc) in rpcs, f"{runbook.name}: ebbflow.v1.{service}/{rpc} is not in protos/"
