"""Static stability of the data plane with real tritonservers: an actuator that dies leaves its replicas serving,
the next one adopts those the OS and Triton confirm and cleans the rest, and stopping leaves nothing behind.

The first actuator runs in its own process (tests/integration/actuator_process.py) and is SIGKILLed, as a crash
would end it; the next runs in the test's process, so the test can look inside it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

import nats
import psutil
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as triton_aio
from prometheus_client import CollectorRegistry

from ebbflow import REPO_ROOT
from ebbflow.actuator.leftovers import find_leftovers
from ebbflow.actuator.local import LocalActuator
from ebbflow.actuator.records import load_records, record_path
from ebbflow.actuator.replica import ActuatorMetrics
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.registry import RegistryView, connected
from ebbflow.runtime.wire import READY
from ebbflow.v1 import registry_pb2, scheduling_pb2
from tests.conftest import expected_output, llm_inputs, wait_for
from tests.integration.actuator_process import CONFIG
from tests.integration.conftest import reset_jetstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PROMPT = "one two three four five"


class ActuatorProcess:
    """The first actuator, in a process of its own."""

    def __init__(self, nats_url: str, state_dir: Path) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "services"), str(REPO_ROOT)]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.actuator_process", nats_url, str(state_dir)],
            stdout=subprocess.PIPE, stderr=open(state_dir.parent / "actuator-process.log", "ab"), text=True, env=env, cwd=REPO_ROOT,
        )

    async def report(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        return json.loads(await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 60))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class Lifecycle:
    """A model's lifecycle events as they are published."""

    def __init__(self) -> None:
        self.events: list[registry_pb2.LifecycleEvent] = []

    async def on_message(self, message: Any) -> None:
        self.events.append(registry_pb2.LifecycleEvent.FromString(message.data))

    def of_kind(self, kind: int) -> list[registry_pb2.LifecycleEvent]:
        return [e for e in self.events if e.kind == kind]


@pytest_asyncio.fixture
async def fleet(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[Bus, RegistryView, Path]]:
    """NATS with empty buckets and a registry view; whatever the test leaves running in its state directory is stopped."""
    await reset_jetstream(nats_url)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    async with connected(nats_url, "adoption-test", 10) as (bus, view):
        yield bus, view, state_dir
    from ebbflow.actuator.leftovers import stop_leftover_replicas

    stop_leftover_replicas(state_dir, grace_s=5.0)


async def desire(bus: Bus, model: str, replicas: int) -> None:
    await bus.desired.put(model, scheduling_pb2.DesiredState(model=model, horizontal=scheduling_pb2.HorizontalDecision(replicas=replicas)).SerializeToString())


async def serves(entry: registry_pb2.ReplicaEntry, max_tokens: int = 3) -> None:
    """Triton answers inference on the replica's own port, correctly: no router, no control plane."""
    client = triton_aio.InferenceServerClient(f"{entry.host}:{entry.grpc_port}")
    try:
        result = await client.infer("llm", llm_inputs(PROMPT, max_tokens), client_timeout=10)
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, max_tokens)
    finally:
        await client.close()


def shm_regions(replica_ids: set[str]) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if any(name.startswith(f"ebbflow_{rid}_") for rid in replica_ids)]


async def first_actuator(nats_url: str, bus: Bus, view: RegistryView, state_dir: Path, replicas: int) -> tuple[ActuatorProcess, dict[str, int], float]:
    """A first actuator that has brought `replicas` llm replicas up: it, their ids and pids, and the cold start."""
    await desire(bus, "llm", replicas)
    started = time.monotonic()
    first = ActuatorProcess(nats_url, state_dir)
    assert await first.report() == {"adopted": [], "cleaned": {}}
    await wait_for(lambda: len(view.ready("llm")) == replicas, 120, f"{replicas} ready replicas from the first actuator")
    return first, {e.replica_id: e.pid for e in view.ready("llm")}, time.monotonic() - started


class DirectClients:
    """One client per replica, calling its Triton port back to back (no router): the data plane alone."""

    def __init__(self, entries: list[registry_pb2.ReplicaEntry]) -> None:
        self.ok = 0
        self.errors: list[str] = []
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(self._loop(entry)) for entry in entries]

    async def _loop(self, entry: registry_pb2.ReplicaEntry) -> None:
        while not self.stop.is_set():
            try:
                await serves(entry)
                self.ok += 1
            except Exception as error:  # counted, not raised: the test asserts there were none
                self.errors.append(f"{entry.replica_id}: {error}")

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


async def test_a_killed_actuator_leaves_its_replicas_serving_and_the_next_adopts_them(nats_url: str, fleet) -> None:
    bus, view, state_dir = fleet
    first, before, cold_start_s = await first_actuator(nats_url, bus, view, state_dir, replicas=2)
    clients = DirectClients(view.ready("llm"))  # from before the kill until after the adoption
    first.kill()

    # The control plane is gone: every replica still answers on its own port, and its registry entry still says READY.
    for entry in view.ready("llm"):
        assert psutil.pid_exists(entry.pid)
        await serves(entry)

    lifecycle = Lifecycle()
    nc = await nats.connect(nats_url)
    await nc.subscribe(subjects.lifecycle_subject("llm"), cb=lifecycle.on_message)
    actuator = LocalActuator(CONFIG, bus, state_dir, ActuatorMetrics(CollectorRegistry()))
    stop, run = asyncio.Event(), None
    try:
        report = await actuator.adopt_previous_run()
        print(f"\ncold start of 2 replicas {cold_start_s:.2f} s; adoption of 2 {report.took_s:.3f} s: {report.summary()}")
        assert sorted(report.adopted) == sorted(before) and not report.cleaned, report
        assert {r.entry.replica_id: r.entry.pid for r in actuator.replicas.values()} == before
        assert all(r.adopted for r in actuator.replicas.values())
        run = asyncio.create_task(actuator.run(stop))

        # Desired (2) is met by the adopted replicas: the next ticks start and drain nothing.
        await wait_for(lambda: len(lifecycle.of_kind(registry_pb2.LIFECYCLE_EVENT_KIND_READY)) >= 2, 10, "the adoptions announced")
        await asyncio.sleep(3 * CONFIG.reconcile_interval_s + 1.0)
        assert not lifecycle.of_kind(registry_pb2.LIFECYCLE_EVENT_KIND_STARTING), "a restart cold-started a replica"
        assert not lifecycle.of_kind(registry_pb2.LIFECYCLE_EVENT_KIND_DRAINING), "a restart drained an adopted replica"
        assert all("adopted by a restarted actuator" in e.message for e in lifecycle.events), [e.message for e in lifecycle.events]
        assert {e.replica_id: e.pid for e in view.ready("llm")} == before and all(e.state == READY for e in view.of_model("llm"))
        await clients.finish()
        print(f"direct calls across the kill and the adoption: {clients.ok} ok, {len(clients.errors)} failed")
        assert clients.ok > 20 and not clients.errors, clients.errors[:3]

        # An adopted replica that dies (not our child: seen by polling its pid) is replaced, and leaves no stub or region.
        victim_id, victim_pid = next(iter(before.items()))
        os.kill(victim_pid, signal.SIGKILL)
        await wait_for(lambda: victim_id not in {e.replica_id for e in view.of_model("llm")}, 20, "the dead adopted replica to leave the registry")
        await wait_for(lambda: len(view.ready("llm")) == 2, 60, "a replacement replica")
        await wait_for(lambda: victim_id not in find_leftovers(state_dir).values() and not shm_regions({victim_id}), 10, "no leftovers of the victim")
        assert not record_path(state_dir, victim_id).exists()
        assert len(lifecycle.of_kind(registry_pb2.LIFECYCLE_EVENT_KIND_FAILED)) == 1
    finally:
        await clients.finish()
        stop.set()
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        await actuator.shutdown()
        await nc.close()

    # A clean shutdown stops adopted and own replicas alike, and leaves nothing.
    everyone = set(before) | {e.replica.replica_id for e in lifecycle.events}
    assert not find_leftovers(state_dir), find_leftovers(state_dir)
    assert not shm_regions(everyone), shm_regions(everyone)
    assert load_records(state_dir) == ([], [])
    await wait_for(lambda: not view.of_model("llm"), 10, "no registry entries after the shutdown")


async def test_a_replica_killed_meanwhile_or_whose_pid_was_reused_is_cleaned_not_adopted(nats_url: str, fleet) -> None:
    bus, view, state_dir = fleet
    first, before, _ = await first_actuator(nats_url, bus, view, state_dir, replicas=3)
    first.kill()
    (dead_id, dead_pid), (reused_id, reused_pid), (kept_id, kept_pid) = sorted(before.items())

    # While no actuator runs: one replica is killed with its whole group (stubs too, so its regions stay behind) ...
    os.killpg(dead_pid, signal.SIGKILL)
    await wait_for(lambda: not psutil.pid_exists(dead_pid) or psutil.Process(dead_pid).status() == psutil.STATUS_ZOMBIE, 10, "the killed replica")
    assert shm_regions({dead_id}), "a SIGKILLed Triton leaves regions behind, or there is nothing to test"
    # ... and another's record names a pid that now belongs to some other process (as after pid reuse).
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    path = record_path(state_dir, reused_id)
    body = json.loads(path.read_text())
    body["entry"]["pid"] = stranger.pid
    path.write_text(json.dumps(body))

    actuator = LocalActuator(CONFIG, bus, state_dir, ActuatorMetrics(CollectorRegistry()))
    stop, run = asyncio.Event(), None
    try:
        report = await actuator.adopt_previous_run()
        assert report.adopted == (kept_id,), report
        assert set(report.cleaned) == {dead_id, reused_id}, report
        assert "is gone" in report.cleaned[dead_id] and "belongs to another process" in report.cleaned[reused_id], report.cleaned
        # Cleaned: registry entries deleted, regions removed, the real server of the reused record killed by its
        # markers; the stranger that now has its pid is left alone.
        assert {e.replica_id for e in view.of_model("llm")} <= {kept_id} | set(before)
        await wait_for(lambda: {e.replica_id for e in view.of_model("llm")} == {kept_id}, 10, "only the adopted replica's entry")
        assert not shm_regions({dead_id, reused_id})
        await wait_for(lambda: not psutil.pid_exists(reused_pid) or psutil.Process(reused_pid).status() == psutil.STATUS_ZOMBIE, 10, "the unadopted server")
        assert set(find_leftovers(state_dir).values()) == {kept_id}
        assert stranger.poll() is None, "the process that took over a recorded pid was signalled"
        assert [r.replica_id for r in load_records(state_dir)[0]] == [kept_id]

        # The adopted one counts toward desired: two new replicas, not three.
        run = asyncio.create_task(actuator.run(stop))
        await wait_for(lambda: len(view.ready("llm")) == 3, 90, "two new replicas beside the adopted one")
        assert kept_id in {e.replica_id for e in view.ready("llm")} and len(actuator.replicas) == 3
    finally:
        stranger.kill()
        stranger.wait()
        stop.set()
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        await actuator.shutdown()
    assert not find_leftovers(state_dir) and not shm_regions(set(before))


async def test_ebbflow_down_with_no_up_running_stops_the_replicas_a_killed_run_left(nats_url: str, fleet) -> None:
    bus, view, state_dir = fleet
    first, before, _ = await first_actuator(nats_url, bus, view, state_dir, replicas=1)
    first.kill()
    (replica_id, pid), = before.items()
    assert find_leftovers(state_dir), "the replica and its stub run on"

    down = await asyncio.to_thread(
        subprocess.run, [str(Path(sys.executable).parent / "ebbflow"), "down", "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT / "services")),
    )
    assert down.returncode == 0 and "stopped the 1 replica(s) it left serving" in down.stdout, down.stdout + down.stderr
    assert not find_leftovers(state_dir) and not shm_regions({replica_id})
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert load_records(state_dir) == ([], [])
    again = subprocess.run([str(Path(sys.executable).parent / "ebbflow"), "down", "--state-dir", str(state_dir)],
                           capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT / "services")))
    assert again.returncode == 2 and "no running ebbflow up found" in again.stderr
