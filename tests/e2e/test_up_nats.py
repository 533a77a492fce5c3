"""`ebbflow up` keeps its nats-server running: SIGKILLed, it is started again on the same port and store, the
terminal says so, `ebbflow status` reports it, and serving never stops."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psutil
import pytest
import tritonclient.grpc as triton_grpc

from ebbflow.runtime.process import free_port
from tests.conftest import expected_output, llm_inputs
from tests.e2e.test_up import Up, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def nats_servers(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "nats-server"]


def test_up_restarts_a_killed_nats_server_and_status_says_so(tmp_path: Path):
    config = tmp_path / "ebbflow.yaml"
    config.write_text("actuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\nmodels:\n  llm:\n    min_replicas: 1\n    max_replicas: 2\n")
    state_dir, port = tmp_path / "state", free_port()
    up = Up(state_dir, config, port)
    seen: list[psutil.Process] = []
    try:
        up.wait_line("ready", 120)
        nats_url = json.loads((state_dir / "state.json").read_text())["nats_url"]
        (server,) = nats_servers(up.process.pid)
        seen.append(server)
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        prompt = "serving does not need NATS"

        server.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert client.infer("llm", llm_inputs(prompt, 4)).as_numpy("text_output").reshape(-1)[0].decode() == expected_output(prompt, 4)
        up.wait_line("nats-server killed by SIGKILL; starting it again", 10)
        back = up.wait_line("nats-server is back on", 20)
        assert nats_url in back
        (again,) = nats_servers(up.process.pid)
        seen.append(again)
        assert again.pid != server.pid and f"-p {nats_url.rsplit(':', 1)[1]}" in " ".join(again.cmdline())

        deadline = time.monotonic() + 15
        while True:  # every client reconnects on its own; the supervisor re-announces its restart count once it has
            status = json.loads(run_cli("status", "--json", "--state-dir", str(state_dir)).stdout)
            if status["nats"]["connected"] and status["nats"]["reconnects"] >= 1 and status["nats"]["server_restarts"] >= 1:
                break
            assert time.monotonic() < deadline, status["nats"]
            time.sleep(0.2)
        print(f"\nnats-server back and the stack reconnected {time.monotonic() - killed:.2f} s after SIGKILL")
        assert status["nats"]["supervised"] and status["nats"]["server_restarts"] == 1 and status["nats"]["url"] == nats_url
        table = run_cli("status", "--state-dir", str(state_dir)).stdout
        assert "NATS: connected" in table and "nats-server restarted 1 time(s), last killed by SIGKILL" in table, table
        assert client.infer("llm", llm_inputs(prompt, 4)).as_numpy("text_output").reshape(-1)[0].decode() == expected_output(prompt, 4)
        client.close()
    finally:
        code = up.stop(60)
    assert code == 0, "".join(up.output)
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in seen), "a nats-server outlived ebbflow up"
