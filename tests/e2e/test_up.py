"""`ebbflow up` as a user starts it: by absolute path, venv not activated, on free ports."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import psutil
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

import ebbflow
from ebbflow.runtime.process import free_port
from tests.conftest import expected_output, llm_inputs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

EBBFLOW = Path(sys.executable).parent / "ebbflow"
SERVICES = Path(ebbflow.__file__).resolve().parents[1]
"""The checkout whose ebbflow these tests import: the `ebbflow` they start runs the same code."""


def user_environment() -> dict[str, str]:
    """A shell that never activated the venv: no VIRTUAL_ENV, the venv's bin not on PATH (PYTHONPATH names the
    checkout under test, wherever the venv's editable install points)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHONPATH"] = str(SERVICES)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if Path(p).resolve() != EBBFLOW.parent.resolve())
    return env


class Up:
    def __init__(self, state_dir: Path, config: Path, port: int, *options: str, http_port: int = 0, env: dict[str, str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [str(EBBFLOW), "up", "--config", str(config), "--state-dir", str(state_dir), "--router-port", str(port), "--router-http-port", str(http_port), *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=user_environment() | (env or {}),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def stop(self, timeout_s: float) -> int:
        """SIGTERM, then the exit code; on a hang, the output so far names where it stuck."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"no exit {timeout_s:.0f} s after SIGTERM; output:\n{''.join(self.output)}") from None

    def wait_line(self, word: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if word in line:
                return line
        raise AssertionError(f"no line with {word!r}; output so far:\n{''.join(self.output)}")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "ebbflow.yaml"
    path.write_text("actuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\nmodels:\n  llm:\n    min_replicas: 1\n    max_replicas: 2\n")
    return path


def run_cli(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EBBFLOW), *args], capture_output=True, text=True, timeout=timeout_s, env=user_environment())


def test_up_serves_unchanged_triton_clients_reports_status_and_stops_clean(tmp_path: Path, config_file: Path):
    state_dir = tmp_path / "state"
    port, http_port = free_port(), free_port()
    up = Up(state_dir, config_file, port, http_port=http_port)
    try:
        assert f"http://127.0.0.1:{http_port}/v2" in up.wait_line("KServe v2 HTTP", 120)
        ready_line = up.wait_line("ready", 120)
        assert f"127.0.0.1:{port}" in ready_line
        children = [p.pid for p in psutil.Process(up.process.pid).children(recursive=True)]
        assert len(children) >= 2, "expected nats-server and at least one tritonserver"

        # (a) an unchanged Triton client pointed at the router gets the model's real output.
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("llm")
        prompt = "ebbflow routes this prompt to a real tritonserver"
        result = client.infer("llm", llm_inputs(prompt, 12))
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(prompt, 12)
        assert client.get_model_metadata("llm").name == "llm"
        # ... and so does an HTTP one, on the router's HTTP port (Triton's generate endpoint, as curl sends it).
        generate = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v2/models/llm/generate", data=json.dumps({"text_input": prompt, "max_tokens": 5}).encode()
        )
        with urllib.request.urlopen(generate, timeout=30) as answer:
            assert json.loads(answer.read())["text_output"] == expected_output(prompt, 5)

        # Bad input: precise codes, and the router stays up.
        with pytest.raises(InferenceServerException) as unknown:
            client.infer("no_such_model", llm_inputs("x", 1))
        assert unknown.value.status() == "StatusCode.NOT_FOUND" and "no_such_model" in unknown.value.message()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as malformed:
                channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(b"\x0a\xff\x01garbage", timeout=5)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InferenceServerException) as refused:
            client.unload_model("llm")
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
        with pytest.raises(InferenceServerException) as streaming:
            stream = triton_grpc.InferInput("stream", [1, 1], "BOOL")
            stream.set_data_from_numpy(__import__("numpy").array([[True]]))
            client.infer("llm", [*llm_inputs("x", 1), stream])
        assert streaming.value.status() == "StatusCode.INVALID_ARGUMENT" and "llm_stream" in streaming.value.message()
        assert client.infer("llm", llm_inputs("still serving", 2)).as_numpy("text_output").reshape(-1)[0].decode() == "still serving"

        # A second `ebbflow up` on the same state directory or port fails at once with a clear message.
        second = run_cli("up", "--state-dir", str(state_dir), "--router-port", str(free_port()))
        assert second.returncode != 0 and "another ebbflow up" in second.stderr
        third = run_cli("up", "--state-dir", str(tmp_path / "other"), "--router-port", str(port), timeout_s=60)
        assert third.returncode != 0 and "in use" in third.stderr

        # `ebbflow status --json` finds the running stack through the state directory alone.
        status = run_cli("status", "--json", "--state-dir", str(state_dir))
        assert status.returncode == 0, status.stderr
        (model,) = json.loads(status.stdout)["models"]
        assert model["name"] == "llm" and model["desired_replicas"] == 1 and model["ready_replicas"] == 1
        assert "min_replicas" in model["last_decision_reason"]
        assert model["instances_per_replica"] == 1 and model["max_batch_size"] == 8 and model["mode"] == "active" and model["pinned"] == ""
        assert "method" in model["forecast"]
        table = run_cli("status", "--state-dir", str(state_dir))
        assert "llm" in table.stdout and "DESIRED" in table.stdout

        # The collector's picture and history, through the CLI.
        load = run_cli("load", "--json", "llm", "--state-dir", str(state_dir))
        assert load.returncode == 0, load.stderr
        (snapshot,) = json.loads(load.stdout)
        assert snapshot["model"] == "llm" and snapshot["ready_replicas"] == 1 and len(snapshot["windows"]) == 2
        history = run_cli("history", "--since", "2m", "--step", "10s", "llm", "--state-dir", str(state_dir))
        assert history.returncode == 0, history.stderr
        header, *rows = history.stdout.splitlines()
        assert header.startswith("time_unix_s,arrival_rps,") and 12 <= len(rows) <= 13
        unknown_model = run_cli("history", "nope", "--state-dir", str(state_dir))
        assert unknown_model.returncode == 2 and "known models: llm" in unknown_model.stderr

        # The forecaster answers for every model with a policy, saying why when it has no forecast yet.
        forecast = run_cli("forecast", "--json", "llm", "--state-dir", str(state_dir))
        assert forecast.returncode == 0, forecast.stderr
        answer = json.loads(forecast.stdout)
        assert answer["model"] == "llm" and answer["step_s"] == 10 and answer["method"] and answer["reason"]
        too_far = run_cli("forecast", "--horizon", "30d", "llm", "--state-dir", str(state_dir))
        assert too_far.returncode == 2 and "beyond the longest forecast" in too_far.stderr

        # Policies: read, translate a Kubernetes HPA (dry run), refuse invalid ones by field.
        shown = run_cli("policy", "get", "llm", "--state-dir", str(state_dir))
        assert shown.returncode == 0 and json.loads(shown.stdout)["model"] == "llm", shown.stderr
        hpa = tmp_path / "hpa.yaml"
        hpa.write_text(
            "apiVersion: autoscaling/v2beta1\nkind: HorizontalPodAutoscaler\nmetadata: {name: llm-service}\n"
            "spec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llm-service}\n  minReplicas: 3\n  maxReplicas: 10\n"
            "  metrics:\n  - type: Resource\n    resource: {name: cpu, targetAverageUtilization: 60}\n"
        )
        imported = run_cli("policy", "import", str(hpa), "--model", "llm", "--dry-run", "--state-dir", str(state_dir))
        assert imported.returncode == 0, imported.stderr
        assert '"target_utilization": 0.6' in imported.stdout and "not stored" in imported.stdout
        bad = tmp_path / "bad.yaml"
        bad.write_text("models:\n  llm: {max_replicas: 0}\n")
        refused = run_cli("policy", "set", str(bad), "--state-dir", str(state_dir))
        assert refused.returncode == 2 and "max_replicas" in refused.stderr
        slo = tmp_path / "slo.yaml"
        slo.write_text("models:\n  llm: {min_replicas: 1, max_replicas: 2, slo_ttft_s: 2, slo_percentile: 99}\n")
        assert run_cli("policy", "set", str(slo), "--state-dir", str(state_dir)).returncode == 0
        policies = run_cli("policy", "list", "--state-dir", str(state_dir))
        assert "SLO p99 TTFT <= 2 s" in policies.stdout, policies.stdout + policies.stderr
        plan = run_cli("plan", "--state-dir", str(state_dir))
        assert plan.returncode == 0 and "inventory: none" in plan.stdout and ": this scheduler leads" in plan.stdout and "\nllm " in plan.stdout, plan.stdout + plan.stderr
        # The decision that started the llm replica, recomputed by the same rule from its recorded inputs.
        listed = run_cli("decisions", "llm", "--state-dir", str(state_dir))
        assert listed.returncode == 0 and "initial" in listed.stdout, listed.stdout + listed.stderr
        explained = run_cli("explain", "llm", "--state-dir", str(state_dir))
        assert explained.returncode == 0 and "reproduced" in explained.stdout, explained.stdout + explained.stderr
        missing = run_cli("explain", "llm", "999", "--state-dir", str(state_dir))
        assert missing.returncode == 2 and "generation 999" in missing.stderr
        pin = run_cli("policy", "pin", "llm", "--replicas", "1", "--by", "e2e", "--why", "testing the override", "--state-dir", str(state_dir))
        assert pin.returncode == 0, pin.stderr
        table = run_cli("status", "--state-dir", str(state_dir))
        assert "[pinned at 1 by e2e: testing the override]" in table.stdout, table.stdout
        assert json.loads(run_cli("policy", "get", "llm", "--state-dir", str(state_dir)).stdout)["pin_by"] == "e2e"
        assert run_cli("policy", "unpin", "llm", "--state-dir", str(state_dir)).returncode == 0
        half = run_cli("policy", "pin", "llm", "--replicas", "1", "--state-dir", str(state_dir))
        assert half.returncode == 2 and "--by WHO" in half.stderr
        hpa.write_text(hpa.read_text().replace("name: cpu", "name: gpu"))
        refused = run_cli("policy", "import", str(hpa), "--state-dir", str(state_dir))
        assert refused.returncode == 2 and "spec.metrics[0].resource.name" in refused.stderr
    finally:
        code = up.stop(timeout_s=40)
    assert code == 0, "".join(up.output)
    assert sum("ready" in line for line in up.output) == 1, "exactly one line may contain 'ready'"
    leftovers = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not leftovers, f"processes left after SIGTERM: {leftovers}"


def test_status_without_a_running_stack_is_a_clear_error(tmp_path: Path):
    result = run_cli("status", "--state-dir", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "no running ebbflow up found" in result.stderr


def test_router_workers_share_the_port_and_a_stream_scales_its_model_from_zero(tmp_path: Path):
    """Two router processes on one port; `llm_stream` starts at zero replicas and wakes on the first request.

    The Python router serves the port itself here (`front: grpc`): behind the HAProxy front the workers would
    only see what the front hands over."""
    config = tmp_path / "workers.yaml"
    config.write_text(
        "router:\n  workers: 2\n  front: grpc\nactuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\n"
        "models:\n  llm:\n    min_replicas: 1\n    max_replicas: 1\n  llm_stream:\n    min_replicas: 0\n    max_replicas: 1\n"
    )
    port, http_port = free_port(), free_port()
    up = Up(tmp_path / "state", config, port, http_port=http_port)
    try:
        up.wait_line("ready", 120)
        metrics_url = f"http://{json.loads((tmp_path / 'state' / 'state.json').read_text())['services']['router']['metrics']}/metrics"
        workers = [p for p in psutil.Process(up.process.pid).children(recursive=True) if "ebbflow.router.worker" in " ".join(p.cmdline())]
        assert len(workers) == 2

        address = f"127.0.0.1:{port}"
        for _ in range(20):  # new connections each time, so the kernel spreads them over both workers
            client = triton_grpc.InferenceServerClient(address)
            assert client.infer("llm", llm_inputs("spread me", 3)).as_numpy("text_output").reshape(-1)[0].decode() == "spread me spread"
            client.close()

        import urllib.request

        for _ in range(10):  # the HTTP port is shared the same way
            generate = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/models/llm/generate", data=b'{"text_input": "spread me", "max_tokens": 3}')
            with urllib.request.urlopen(generate, timeout=30) as answer:
                assert json.loads(answer.read())["text_output"] == "spread me spread"

        tokens: queue.Queue = queue.Queue()
        client = triton_grpc.InferenceServerClient(address)
        assert client.is_model_ready("llm_stream"), "a model that can scale from zero reports ready"
        client.start_stream(callback=lambda result, error: tokens.put((result, error)))
        client.async_stream_infer("llm_stream", llm_inputs("from zero to tokens", 6), request_id="z")
        received = []
        for _ in range(6):
            result, error = tokens.get(timeout=90)
            assert error is None, error
            received.append(result.as_numpy("text_output").reshape(-1)[0].decode())
        client.stop_stream()
        client.close()
        assert received == ["from", "zero", "to", "tokens", "from", "zero"]

        text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith('ebbflow_router_requests_total{code="OK",model="llm"}'))
        assert served == 30, "the router service's /metrics sums both workers, gRPC and HTTP requests alike"
        assert 'ebbflow_router_hold_wait_seconds_count{model="llm_stream"} 1.0' in text
    finally:
        code = up.stop(timeout_s=40)
    assert code == 0, "".join(up.output)


def readme_client_snippet() -> str:
    """The README's first Python block: the unary call and the streaming example a new user copies."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "stop_stream()" in block and "llm_stream" in block
    return block


def readme_http_examples() -> tuple[str, list[tuple[str, list[str]]]]:
    """The README's tritonclient.http block, and each curl command of the block after it with the output its
    comment lines show."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (python,) = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:] if "tritonclient.http" in b.split("```", 1)[0]]
    shell = readme.split(python, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands: list[tuple[str, list[str]]] = []
    for line in shell.splitlines():
        if line.startswith("curl "):
            commands.append((line, []))
        elif line.startswith("# ") and commands:
            commands[-1][1].append(line[2:])
    assert len(commands) == 2 and all(expected for _, expected in commands)
    return python, commands


def test_the_readme_client_runs_as_written_and_down_stops_the_stack(tmp_path: Path):
    """What a new user does first: copy the README's client (unary, then a stream from zero replicas), pipe
    commands into `head`, look at older decisions, find a replica's metrics, and stop the stack from another shell."""
    config = tmp_path / "ebbflow.yaml"
    config.write_text(
        "actuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\n"
        "models:\n  llm:\n    min_replicas: 1\n    max_replicas: 1\n  llm_stream:\n    min_replicas: 0\n    max_replicas: 1\n"
    )
    state_dir = tmp_path / "state"
    port, http_port = free_port(), free_port()
    up = Up(state_dir, config, port, http_port=http_port)
    stopped = False
    try:
        up.wait_line("ready", 120)
        children = [p.pid for p in psutil.Process(up.process.pid).children(recursive=True)]
        assert run_cli("--version").stdout.startswith("ebbflow ")

        # The README's snippet, only the address changed: it must finish by itself (stop_stream after the final token).
        snippet = readme_client_snippet().replace("127.0.0.1:8001", f"127.0.0.1:{port}")
        ran = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=150, env=user_environment())
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert ran.stdout.splitlines() == ["[[b'hello world hello world']]", "[[b'hello']]", "[[b'world']]", "[[b'hello']]", "[[b'world']]"], ran.stdout

        # The HTTP examples too: tritonclient.http, and curl on Triton's generate endpoints (llm_stream is up now).
        python, commands = readme_http_examples()
        ran = subprocess.run(
            [sys.executable, "-c", python.replace("127.0.0.1:8000", f"127.0.0.1:{http_port}")],
            capture_output=True, text=True, timeout=60, env=user_environment(),
        )
        assert ran.returncode == 0 and ran.stdout.splitlines() == ["[[b'hello world hello world']]"], ran.stdout + ran.stderr
        if shutil.which("curl"):
            for command, expected in commands:
                curl = subprocess.run(["bash", "-c", command.replace("127.0.0.1:8000", f"127.0.0.1:{http_port}")], capture_output=True, text=True, timeout=30)
                assert [line for line in curl.stdout.splitlines() if line] == expected, (command, curl.stdout, curl.stderr)

        # Piped into a reader that stops early: no traceback (history at 1 s steps is far more than a pipe holds).
        shell = f"{EBBFLOW} history --since 1h --step 1s llm --state-dir {state_dir} | head -1"
        piped = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], capture_output=True, text=True, timeout=30, env=user_environment())
        assert piped.stdout.startswith("time_unix_s,") and "Traceback" not in piped.stderr and piped.returncode == 141, piped.stderr

        # Older decisions by negative index; past the oldest, a clear error.
        listed = run_cli("decisions", "llm", "--json", "--state-dir", str(state_dir))
        generations = [int(d["generation"]) for d in json.loads(listed.stdout)]
        latest = run_cli("explain", "llm", "-1", "--state-dir", str(state_dir))
        assert latest.returncode == 0 and f"generation {generations[-1]}:" in latest.stdout, latest.stdout + latest.stderr
        too_old = run_cli("explain", "llm", f"-{len(generations) + 1}", "--state-dir", str(state_dir))
        assert too_old.returncode == 2 and "recorded decision(s)" in too_old.stderr and "Traceback" not in too_old.stderr

        # status --json lists each replica's metrics endpoint, and it is the replica's Triton /metrics.
        import urllib.request

        (llm,) = [m for m in json.loads(run_cli("status", "--json", "--state-dir", str(state_dir)).stdout)["models"] if m["name"] == "llm"]
        (replica,) = llm["replicas"]
        assert replica["metrics"] == f"http://127.0.0.1:{replica['metrics_port']}/metrics"
        assert "nv_inference_count" in urllib.request.urlopen(replica["metrics"], timeout=5).read().decode()

        # --horizon 1h: the finest resolution whose 12 bins reach an hour is 10 min, as the README says.
        hour = run_cli("forecast", "--horizon", "1h", "--json", "llm", "--state-dir", str(state_dir))
        assert hour.returncode == 0 and json.loads(hour.stdout)["step_s"] == 600, hour.stdout + hour.stderr

        # `ebbflow down` from another shell: the stack stops cleanly, and a second one says nothing runs.
        down = run_cli("down", "--state-dir", str(state_dir), timeout_s=90)
        assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
        assert up.process.poll() == 0, "ebbflow up has exited, cleanly, when down returns"
        stopped = True
        again = run_cli("down", "--state-dir", str(state_dir))
        assert again.returncode == 2 and "no running ebbflow up found" in again.stderr
        leftovers = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert not leftovers, f"processes left after ebbflow down: {leftovers}"
    finally:
        if not stopped:
            up.stop(timeout_s=40)
    assert sum("ready" in line for line in up.output) == 1, "exactly one line may contain 'ready'"


def _status_of(state_dir: Path, model: str) -> dict:
    status = run_cli("status", "--json", "--state-dir", str(state_dir))
    assert status.returncode == 0, status.stderr
    (found,) = [m for m in json.loads(status.stdout)["models"] if m["name"] == model]
    return found


def test_a_clean_stop_forgets_the_desired_count_and_the_next_start_begins_at_the_floor(tmp_path: Path):
    """Load scales llm to 3; `ebbflow down` stops the stack while the 120 s scale-down delay still holds 3. The next
    `ebbflow up` on the same state directory starts llm at its floor (the initial decision), not at the old 3."""
    config = tmp_path / "ebbflow.yaml"
    config.write_text(
        "actuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\n"
        "models:\n  llm:\n    min_replicas: 1\n    max_replicas: 3\n    target_in_flight_per_replica: 1\n    scale_down_delay_s: 120\n"
    )
    state_dir = tmp_path / "state"
    port = free_port()
    up = Up(state_dir, config, port)
    running = True
    stop_clients = threading.Event()
    errors: list[str] = []

    def client() -> None:
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as connection:
            while not stop_clients.is_set():
                try:
                    connection.infer("llm", llm_inputs("one two three four five", 40), client_timeout=30)
                except InferenceServerException as error:
                    errors.append(str(error))

    try:
        up.wait_line("ready", 120)
        clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 90
        while _status_of(state_dir, "llm")["desired_replicas"] < 3:
            assert time.monotonic() < deadline, f"4 clients at 1 in flight per replica never scaled llm to 3:\n{''.join(up.output)}"
            time.sleep(0.5)
        stop_clients.set()
        for thread in clients:
            thread.join(60)
        assert not errors, errors[:3]
        down = run_cli("down", "--state-dir", str(state_dir), timeout_s=90)
        assert down.returncode == 0, down.stdout + down.stderr
        running = False

        up = Up(state_dir, config, port)
        running = True
        up.wait_line("ready", 120)
        llm = _status_of(state_dir, "llm")
        listed = json.loads(run_cli("decisions", "llm", "--json", "--state-dir", str(state_dir)).stdout)
        newest = listed[-1]
        assert llm["desired_replicas"] == 1 and len(llm["replicas"]) == 1, (llm, [d["desired"]["reason"] for d in listed])
        assert newest["desired"]["reason"].startswith("initial") and int(newest.get("previous_replicas", 0)) == 0, newest
        assert int(newest["generation"]) > max(int(d["generation"]) for d in listed[:-1]), "generations stay monotonic across the restart"
    finally:
        stop_clients.set()
        if running:
            up.stop(timeout_s=40)
