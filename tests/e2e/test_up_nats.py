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
        where = nats_url.rpartition("@")[2]  # host:port; the URL carries the supervisor's NATS user
        (server,) = nats_servers(up.process.pid)
        seen.append(server)
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        prompt = "serving does not need NATS"

        server.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert client.infer("llm", llm_inputs(prompt, 4)).as_numpy("text_output").reshape(-1)[0].decode() == expected_output(prompt, 4)
        up.wait_line("nats-server killed by SIGKILL; starting it again", 10)
        back = up.wait_line("nats-server is back on", 20)
        assert f"nats://{where}" in back and "supervisor" not in back
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
        assert status["nats"]["supervised"] and status["nats"]["server_restarts"] == 1 and status["nats"]["url"].endswith(f":***@{where}")
        table = run_cli("status", "--state-dir", str(state_dir)).stdout
        assert "NATS: connected" in table and "nats-server restarted 1 time(s), last killed by SIGKILL" in table, table
        assert client.infer("llm", llm_inputs(prompt, 4)).as_numpy("text_output").reshape(-1)[0].decode() == expected_output(prompt, 4)
        client.close()
    finally:
        code = up.stop(60)
    assert code == 0, "".join(up.output)
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in seen), "a nats-server outlived ebbflow up"


def test_each_service_has_its_own_nats_user_and_writes_only_what_it_owns(tmp_path: Path):
    """`ebbflow up` gives each service a NATS user: a wrong password is refused, and only the scheduler may write
    desired state, only the actuator the replica registry (runtime/nats_auth.py)."""
    import asyncio
    import os
    import stat

    import nats

    from ebbflow.runtime.bus import connect
    from ebbflow.runtime.nats_auth import NatsUsers

    config = tmp_path / "ebbflow.yaml"
    config.write_text("actuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\nmodels:\n  llm:\n    min_replicas: 1\n    max_replicas: 1\n")
    state_dir, port = tmp_path / "state", free_port()
    up = Up(state_dir, config, port)
    try:
        up.wait_line("ready", 120)
        state = json.loads((state_dir / "state.json").read_text())
        users = NatsUsers(json.loads((state_dir / "nats-users.json").read_text()))
        for private in ("state.json", "nats-users.json", "nats-auth.conf"):
            assert stat.S_IMODE(os.stat(state_dir / private).st_mode) == 0o600, private
        for process in psutil.Process(up.process.pid).children(recursive=True):
            assert users.passwords["router"] not in " ".join(process.cmdline()), "passwords stay off command lines"
        url = state["nats_url"]

        async def check() -> None:
            with pytest.raises(Exception, match="Authorization Violation"):
                await asyncio.wait_for(nats.connect(url.replace(users.passwords["supervisor"], "wrong"), allow_reconnect=False, connect_timeout=2), 10)
            scheduler = await connect(users.url("scheduler", url), name="test-scheduler")
            try:
                before = await scheduler.desired.get("llm")
                for user in ("router", "collector", "forecaster", "actuator"):
                    bus = await connect(users.url(user, url), name=f"test-{user}")
                    try:
                        with pytest.raises(Exception):  # the server drops the publish: no acknowledgement comes
                            await bus.js.publish("$KV.desired.llm", b"evil", timeout=1.0)
                        if user != "actuator":
                            with pytest.raises(Exception):
                                await bus.js.publish("$KV.replicas.llm.fake", b"evil", timeout=1.0)
                        with pytest.raises(Exception):
                            await bus.js.purge_stream("KV_desired", timeout=1.0)
                        assert (await bus.desired.get("llm")).value == before.value  # reads stay open
                    finally:
                        await bus.close()
                assert (await scheduler.desired.get("llm")).revision == before.revision
            finally:
                await scheduler.close()

        asyncio.run(check())
        assert "NATS: connected" in run_cli("status", "--state-dir", str(state_dir)).stdout
    finally:
        code = up.stop(60)
    assert code == 0
