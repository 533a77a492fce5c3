"""`ebbflow up --prometheus` with load through the router: the real Prometheus it starts scrapes every service and
replica, loads deploy/prometheus's rules, and every PromQL expression of every dashboard panel and every recording
rule returns data (a query that returns nothing fails, naming the panel); the stop leaves nothing running."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
import tritonclient.grpc as triton_grpc
import yaml

from ebbflow.runtime.process import free_port
from tests.conftest import expected_output, llm_inputs
from tests.e2e.test_up import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_MODEL = "llm_stream"
"""What the `model` template variable is set to: the streaming model, so TTFT and TPOT have data too."""
CONFIG = """\
router:
  front: grpc
actuator:
  time_scale: 0.02
  exit_timeout_s: 3
forecaster:
  resolutions_s: [1]
  horizon_steps: 3
models:
  llm:
    min_replicas: 1
    max_replicas: 2
    slo_latency_s: 30
  llm_stream:
    min_replicas: 1
    max_replicas: 1
    slo_latency_s: 30
    slo_ttft_s: 0.0001
"""
"""llm meets its objective with room; every llm_stream request misses its (impossible) time to first token."""


def query(prometheus: str, expr: str) -> dict:  # type: ignore[type-arg]
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:  # a bad expression answers 400 with the parser's message
        return dict(json.loads(error.read()))


def get(prometheus: str, path: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"{prometheus}{path}", timeout=10) as response:
        return dict(json.loads(response.read()))


def expressions() -> dict[str, str]:
    """Every panel target and annotation of every dashboard and every recording rule, by a name that says where."""
    found = {}
    for path in sorted(p.with_suffix(".json") for p in (ROOT / "deploy" / "grafana").glob("*.ts") if p.name != "lib.ts"):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                found[f"dashboard {path.stem}, panel {panel['title']!r}, query {target['refId']}"] = target["expr"]
        for annotation in dashboard["annotations"]["list"]:
            # An annotation marks events (a decision in the last seconds): asked without its `> 0` filter, it must
            # still find the series it watches; with the filter it must parse (checked with the alerts).
            expr = annotation["target"]["expr"]
            assert expr.endswith(" > 0"), f"{path.stem}: annotation {annotation['name']!r} is expected to filter with > 0"
            found[f"dashboard {path.stem}, annotation {annotation['name']!r} (without its filter)"] = expr.removesuffix(" > 0")
    for path in sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    found[f"recording rule {rule['record']}"] = rule["expr"]
    return {where: expr.replace("$model", DASHBOARD_MODEL) for where, expr in found.items()}


def alert_expressions() -> dict[str, str]:
    """Alert rules and dashboard annotations: event filters that are empty on a healthy stack."""
    found = {}
    for path in sorted(p.with_suffix(".json") for p in (ROOT / "deploy" / "grafana").glob("*.ts") if p.name != "lib.ts"):
        for annotation in json.loads(path.read_text())["annotations"]["list"]:
            found[f"dashboard {path.stem}, annotation {annotation['name']!r}"] = annotation["target"]["expr"].replace("$model", DASHBOARD_MODEL)
    for path in sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for i, rule in enumerate(group["rules"]):
                if "alert" in rule:
                    found[f"alert {rule['alert']} #{i}"] = rule["expr"]
    return found


class Load:
    """Unary requests to llm and streams to llm_stream through the router, from a thread, until stopped."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.done = threading.Event()
        self.requests = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client = triton_grpc.InferenceServerClient(self.address)
        tokens: queue.Queue = queue.Queue()  # type: ignore[type-arg]
        client.start_stream(callback=lambda result, error: tokens.put((result, error)))
        try:
            while not self.done.is_set():
                answer = client.infer("llm", llm_inputs("measure me", 3)).as_numpy("text_output").reshape(-1)[0].decode()
                if answer != expected_output("measure me", 3):
                    self.errors.append(f"llm answered {answer!r}")
                client.async_stream_infer(DASHBOARD_MODEL, llm_inputs("stream me", 3))
                for _ in range(3):
                    _, error = tokens.get(timeout=30)
                    if error is not None:
                        self.errors.append(str(error))
                self.requests += 2
        except Exception as error:  # reported by the test, not lost in the thread
            self.errors.append(repr(error))
        finally:
            client.stop_stream()
            client.close()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=40)


def test_prometheus_scrapes_the_stack_and_every_dashboard_and_recording_rule_query_returns_data(tmp_path: Path) -> None:
    config = tmp_path / "ebbflow.yaml"
    config.write_text(CONFIG)
    state_dir = tmp_path / "state"
    port = free_port()
    up = Up(state_dir, config, port, "--prometheus")
    load = None
    prometheus_pid = 0
    try:
        line = up.wait_line("prometheus at", 60)
        prometheus = line.split("prometheus at ", 1)[1].split()[0]
        up.wait_line("ready", 120)
        assert json.loads((state_dir / "state.json").read_text())["prometheus"] == prometheus
        prometheus_pid = next(p.pid for p in psutil.Process(up.process.pid).children() if p.name() == "prometheus")
        load = Load(f"127.0.0.1:{port}")

        # Every service and every replica (two models, one replica each) scraped and up.
        def targets() -> list[tuple[str, str]]:
            active = get(prometheus, "/api/v1/targets")["data"]["activeTargets"]
            return sorted((t["labels"]["job"], t["labels"].get("service", "replica")) for t in active if t["health"] == "up")

        deadline = time.monotonic() + 30
        while targets() != sorted([("ebbflow", s) for s in ("actuator", "collector", "forecaster", "router", "scheduler")] + [("triton", "replica")] * 2):
            assert time.monotonic() < deadline, f"targets up: {targets()}"
            time.sleep(0.5)
        groups = {g["name"]: g for g in get(prometheus, "/api/v1/rules")["data"]["groups"]}
        assert set(groups) == {"ebbflow.slo", "ebbflow.fleet", "ebbflow.alerts"}
        assert all(rule["health"] == "ok" for group in groups.values() for rule in group["rules"]), groups

        # Alert and annotation expressions parse (most return nothing on a healthy stack, as they should).
        for where, expr in alert_expressions().items():
            answer = query(prometheus, expr)
            assert answer["status"] == "success", f"{where}: {answer.get('error')}"

        # Every dashboard and recording-rule expression returns data. Some need a few scrapes or the first
        # forecast; the ones still empty are asked again until a deadline.
        pending = expressions()
        assert len(pending) > 50
        deadline = time.monotonic() + 60
        while True:
            failures = {}
            for where, expr in pending.items():
                answer = query(prometheus, expr)
                if answer["status"] != "success":
                    failures[where] = f"error {answer.get('error')}: {expr}"
                elif not answer["data"]["result"]:
                    failures[where] = f"no data: {expr}"
            pending = {where: pending[where] for where in failures}
            if not failures or time.monotonic() > deadline or any(f.startswith("error") for f in failures.values()):
                break
            time.sleep(2.0)
        assert not failures, "\n".join(f"{where}: {why}" for where, why in failures.items())

        # The router counts requests against the objectives of the policy it follows: the latency SLI.
        slow = {r["metric"]["model"]: float(r["value"][1]) for r in query(prometheus, "model:ebbflow_router_slow_requests:ratio_rate5m")["data"]["result"]}
        assert slow["llm"] == 0 and slow["llm_stream"] > 0.5, slow
        assert load.requests > 10 and not load.errors, load.errors[:3]
    finally:
        if load is not None:
            load.stop()
        code = up.stop(timeout_s=60)
    assert code == 0, "".join(up.output)
    assert not psutil.pid_exists(prometheus_pid) or psutil.Process(prometheus_pid).status() == psutil.STATUS_ZOMBIE
    assert (state_dir / "prometheus" / "data").is_dir(), "its data stays in the state directory"
