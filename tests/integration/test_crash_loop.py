"""Crash loops with a real tritonserver: a model whose server dies while loading it backs off with growing gaps,
`status` says why from the replica's log, the log directory stays bounded, and nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import grpc
import nats
import pytest
import pytest_asyncio

from ebbflow.status import status_json, status_table
from ebbflow.runtime import subjects
from ebbflow.policy import ModelPolicy
from ebbflow.stack import Stack
from ebbflow.v1 import registry_pb2, status_pb2, status_pb2_grpc
from tests.conftest import wait_for
from tests.integration.conftest import reset_jetstream, stack_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

INITIAL_S, MAX_S = 1.0, 4.0
KEEP_BYTES = 32 * 1024  # a few runs: a tritonserver start logs about 12 KB

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] }} ]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
"""

# The server loads the model, then dies as from a fault in native code (SIGKILL: no unloading), so its shared
# memory stays behind, and so does a helper process the model started (as tokenizer workers are), unless the
# actuator cleans up. The helper carries the replica's region prefix in its command line, for `leftovers`.
CRASHING_MODEL = """
import os, signal, subprocess, sys, threading

class TritonPythonModel:
    def initialize(self, args):
        argv = open("/proc/self/cmdline", "rb").read().decode().split("\\0")
        prefix = next(a for a in argv if a.startswith("ebbflow_"))
        subprocess.Popen(["python3", "-c", "import time; time.sleep(120)", prefix])

        def crash():
            print("crashing on purpose: CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
            os.kill(os.getppid(), signal.SIGKILL)

        threading.Timer(0.5, crash).start()

    def execute(self, requests):
        return []
"""

# The common case: the model raises while loading; tritonserver logs why and exits with code 1.
RAISING_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file weights.bin is missing")

    def execute(self, requests):
        return []
"""


# A healthy model that starts a helper process, as a model's tokenizer workers would be.
HELPER_MODEL = """
import subprocess

class TritonPythonModel:
    def initialize(self, args):
        argv = open("/proc/self/cmdline", "rb").read().decode().split("\\0")
        prefix = next(a for a in argv if a.startswith("ebbflow_"))
        self.helper = subprocess.Popen(["python3", "-c", "import time; time.sleep(120)", prefix])

    def execute(self, requests):
        return []
"""


def model_repository(root: Path, name: str, source: str) -> Path:
    version = root / name / "1"
    version.mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    (version / "model.py").write_text(source)
    return root


@pytest_asyncio.fixture
async def crash_stack(nats_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    stacks: list[Stack] = []

    async def make(name: str, source: str) -> Stack:
        await reset_jetstream(nats_url)
        config = stack_config(ModelPolicy(model=name, min_replicas=1, max_replicas=1))
        actuator = replace(
            config.actuator,
            model_repository=str(model_repository(tmp_path / "models", name, source)),
            crash_backoff_initial_s=INITIAL_S,
            crash_backoff_max_s=MAX_S,
            replica_log_keep_bytes=KEEP_BYTES,
        )
        stack = Stack(replace(config, actuator=actuator), nats_url, tmp_path / "state")
        stacks.append(stack)
        await stack.start()
        return stack

    yield make
    for stack in stacks:
        if not stack.stopped:  # a test that stops its stack itself checks what is left after
            await stack.stop()


class Lifecycle:
    """A model's lifecycle events as they are published (wall-clock times)."""

    def __init__(self) -> None:
        self.events: list[registry_pb2.LifecycleEvent] = []

    async def on_message(self, message: Any) -> None:
        self.events.append(registry_pb2.LifecycleEvent.FromString(message.data))

    def times(self, kind: int) -> list[float]:
        return [e.time_unix_s for e in self.events if e.kind == kind]

    def replica_ids(self) -> set[str]:
        return {e.replica.replica_id for e in self.events}


def leftovers(replica_ids: set[str]) -> list[str]:
    """Processes and shared-memory regions of these replicas still on the machine (the stubs' command lines
    carry their replica's region prefix)."""
    prefixes = [f"ebbflow_{rid}_" for rid in replica_ids]
    found = [f"/dev/shm/{name}" for name in os.listdir("/dev/shm") if any(name.startswith(p) for p in prefixes)]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(p in cmdline for p in prefixes):
            found.append(f"pid {pid}: {cmdline[:120]}")
    return found


async def get_status(stack: Stack, model: str) -> status_pb2.GetStatusResponse:
    assert stack.addresses is not None
    async with grpc.aio.insecure_channel(stack.addresses.control) as channel:
        return await status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest(model=model), timeout=5)


async def watch(stack: Stack, nats_url: str, model: str) -> tuple[Lifecycle, Any]:
    lifecycle = Lifecycle()
    nc = await nats.connect(nats_url)
    await nc.subscribe(subjects.lifecycle_subject(model), cb=lifecycle.on_message)
    return lifecycle, nc


async def test_a_server_that_keeps_dying_backs_off_doubling_and_status_shows_why(crash_stack, nats_url: str) -> None:
    lifecycle, nc = await watch(stack := await crash_stack("crashing", CRASHING_MODEL), nats_url, "crashing")
    try:
        await wait_for(lambda: len(lifecycle.times(registry_pb2.LIFECYCLE_EVENT_KIND_FAILED)) >= 5, 150, "five failed starts")
        failed = lifecycle.times(registry_pb2.LIFECYCLE_EVENT_KIND_FAILED)
        starting = lifecycle.times(registry_pb2.LIFECYCLE_EVENT_KIND_STARTING)
        # Each start after a failure waits the back-off: 0 (a single failure is replaced at once), then 1, 2, 4, 4 s.
        waits = [next(s for s in starting if s >= f) - f for f in failed[:4]]
        expected = [0.0, INITIAL_S, 2 * INITIAL_S, MAX_S]
        assert all(w >= e - 0.05 for w, e in zip(waits, expected)), (waits, expected)
        assert waits[3] > waits[1] > waits[0], waits
        # One replica at a time while it loops.
        assert len(starting) <= len(failed) + 1

        response = await get_status(stack, "crashing")
        (model,) = response.models
        crash = model.crash_loop
        assert crash.restarts >= 4 and "crash-loop" in crash.state, crash
        assert "killed by SIGKILL" in crash.reason
        assert any("CUDA error: an illegal memory access" in line for line in crash.log_tail), crash.log_tail
        table = status_table(response)
        assert "crash-loop" in table and "CUDA error: an illegal memory access" in table, table
        as_json = json.loads(json.dumps(status_json(response)))["models"][0]["crash_loop"]
        assert as_json["restarts"] >= 4 and as_json["log_path"].endswith("triton-crashing-0.log") and as_json["log_tail"]

        # One log for the model's one slot, however many attempts, cut at each start to KEEP_BYTES of earlier runs.
        logs = sorted(p.name for p in (stack.state_dir / "logs").glob("triton-*"))
        assert logs == ["triton-crashing-0.log"], logs
        log_text = (stack.state_dir / "logs" / "triton-crashing-0.log").read_text()
        assert len(log_text.encode()) < KEEP_BYTES + 32 * 1024 and log_text.count("==== replica") >= 2

        # Every failed replica's stub and shared memory are gone (the current attempt's may still be starting).
        current = {e.replica.replica_id for e in lifecycle.events[-1:]}
        done = lifecycle.replica_ids() - current
        await wait_for(lambda: not leftovers(done), 10, f"no leftovers of failed replicas: {leftovers(done)}")
    finally:
        await nc.close()
        await stack.stop()
    assert not leftovers(lifecycle.replica_ids()), leftovers(lifecycle.replica_ids())


async def test_a_model_that_raises_while_loading_shows_the_error_from_the_log(crash_stack, nats_url: str) -> None:
    lifecycle, nc = await watch(stack := await crash_stack("raising", RAISING_MODEL), nats_url, "raising")
    try:
        await wait_for(lambda: len(lifecycle.times(registry_pb2.LIFECYCLE_EVENT_KIND_FAILED)) >= 2, 90, "two failed starts")

        async def backing_off() -> bool:
            crash = (await get_status(stack, "raising")).models[0].crash_loop
            return crash.restarts >= 2 and crash.next_try_unix_s > 0

        deadline = time.monotonic() + 30
        while not await backing_off():
            assert time.monotonic() < deadline, "status never showed the back-off"
            await asyncio.sleep(0.2)
        crash = (await get_status(stack, "raising")).models[0].crash_loop
        assert "tritonserver exited with code 1" in crash.reason, crash.reason
        assert any("weights file weights.bin is missing" in line for line in crash.log_tail), crash.log_tail
        # Never ready: ready has differed from desired since the first start, not since the latest failure
        # (what EbbflowReplicasNotReady measures).
        failed = lifecycle.times(registry_pb2.LIFECYCLE_EVENT_KIND_FAILED)
        since = stack.sample("ebbflow_actuator_unready_since_timestamp_seconds", {"model": "raising"})
        assert since is not None and 0 < since <= failed[0], (since, failed)
    finally:
        await nc.close()
        await stack.stop()
    assert not leftovers(lifecycle.replica_ids()), leftovers(lifecycle.replica_ids())


async def test_a_run_killed_with_sigkill_leaves_its_replicas_serving_and_the_next_start_adopts_or_cleans_them(
    nats_url: str, tmp_path: Path
) -> None:
    """`ebbflow up` SIGKILLed: its tritonservers are the data plane and keep serving, with the model's helper
    processes. One of them then dies on its own (SIGKILL to the server alone: its helper and the stubs' shared
    memory would stay). The next start on the same state directory adopts the live one (same process, no cold
    start), removes what the dead one left, and starts one replica for it; its clean stop leaves nothing."""
    await reset_jetstream(nats_url)
    state_dir, repository = tmp_path / "state", model_repository(tmp_path / "models", "helped", HELPER_MODEL)
    config_file = tmp_path / "ebbflow.yaml"
    config_file.write_text(
        f"actuator:\n  model_repository: {repository}\n  time_scale: 0.02\n  exit_timeout_s: 3\n"
        "models:\n  helped:\n    min_replicas: 2\n    max_replicas: 2\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "services"))
    up = subprocess.Popen(
        [str(Path(sys.executable).parent / "ebbflow"), "up", "--config", str(config_file), "--state-dir", str(state_dir),
         "--router-port", "0", "--nats-url", nats_url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    stack = None
    try:
        assert up.stdout is not None
        output = []
        deadline = time.monotonic() + 120
        while not any("ebbflow ready" in line for line in output):
            line = await asyncio.to_thread(up.stdout.readline)
            assert line and time.monotonic() < deadline, "".join(output)
            output.append(line)
        await wait_for(lambda: sum("time.sleep(120)" in cmd for cmd in helpers(state_dir).values()) == 2, 60, "the models' helper processes")
        up.kill()
        up.wait()
        servers = {pid: cmd for pid, cmd in helpers(state_dir).items() if "tritonserver" in cmd}
        assert len(servers) == 2, f"both tritonservers outlive the run: {helpers(state_dir)}"
        survivor, victim = sorted(servers)
        survivor_id, victim_id = marked(state_dir)[survivor], marked(state_dir)[victim]
        os.kill(victim, signal.SIGKILL)  # the server alone: its helper and regions stay
        await wait_for(lambda: victim not in helpers(state_dir), 10, "the victim server to die")
        assert any(rid == victim_id for rid in marked(state_dir).values()), "the victim's helper outlives it, or there is nothing to test"

        config = stack_config(ModelPolicy(model="helped", min_replicas=2, max_replicas=2))
        stack = Stack(replace(config, actuator=replace(config.actuator, model_repository=str(repository))), nats_url, state_dir)
        await stack.start()
        assert stack.actuator is not None
        adopted = [r for r in stack.actuator.replicas.values() if r.adopted]
        assert [(r.entry.replica_id, r.entry.pid) for r in adopted] == [(survivor_id, survivor)]
        assert not leftovers({victim_id}), leftovers({victim_id})
        assert victim_id not in marked(state_dir).values()
        await stack.wait_serving(["helped"], timeout_s=60)
        await wait_for(lambda: len(stack.view.ready("helped")) == 2, 60, "one new replica beside the adopted one")
        assert survivor in {e.pid for e in stack.view.ready("helped")}
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if stack is not None:
            await stack.stop()
    assert not helpers(state_dir)


def marked(state_dir: Path) -> dict[int, str]:
    """This state directory's replica processes still running, as pid -> replica id."""
    from ebbflow.actuator.leftovers import find_leftovers

    return find_leftovers(state_dir)


def helpers(state_dir: Path) -> dict[int, str]:
    """This state directory's replica processes still running, with their command lines."""
    from ebbflow.actuator.leftovers import find_leftovers

    found = {}
    for pid in find_leftovers(state_dir):
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            pass
    return found
