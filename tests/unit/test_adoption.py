"""Replicas that outlive the actuator: the adopt-or-clean rule, the records they are adopted from, detached
processes, and stopping what a killed `ebbflow up` left (real short-lived processes, no tritonserver)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ebbflow.actuator.adoption import AdoptionReport, ProcessFacts, Verdict, judge
from ebbflow.actuator.leftovers import find_leftovers, observe, owner_of, replica_markers, stop_leftover_replicas
from ebbflow.actuator.records import ReplicaRecord, load_records, record_path, remove_record, save_record
from ebbflow.runtime.process import AdoptedProcess, process_alive, spawn
from ebbflow.v1 import registry_pb2

OWNER = "/var/lib/ebbflow"


def record(pid: int = 4242, started_at_s: float = 1000.0, replica_id: str = "abcd1234") -> ReplicaRecord:
    entry = registry_pb2.ReplicaEntry(
        model="llm", replica_id=replica_id, host="127.0.0.1", grpc_port=9001, http_port=9002, metrics_port=9003, pid=pid,
        instances=2, max_batch_size=8, gpu_slot="node/gpu1", gpu_memory_gb=20.0, applied_generation=7, started_at_unix_s=990.0,
    )
    return ReplicaRecord(entry, started_at_s, "/state/logs/triton-llm-0.log", 0, 120)


SAME = ProcessFacts(running=True, started_at_s=1000.0, owner=OWNER, replica_id="abcd1234")


@pytest.mark.parametrize(
    "recorded, facts, ready, verdict, because",
    [
        (record(), SAME, True, Verdict.ADOPT, "running and ready for llm on port 9002"),
        (record(), ProcessFacts(True, 1000.004, OWNER, "abcd1234"), True, Verdict.ADOPT, "running and ready"),  # one process read twice
        (record(), SAME, False, Verdict.CLEAN, "Triton does not answer ready for llm on port 9002"),
        (record(), ProcessFacts(running=False), True, Verdict.CLEAN, "its process (pid 4242) is gone"),
        (record(), ProcessFacts(True, 1500.0, OWNER, "abcd1234"), True, Verdict.CLEAN, "pid 4242 now belongs to another process"),
        (record(), ProcessFacts(True, 1000.0, "/elsewhere", "abcd1234"), True, Verdict.CLEAN, "not marked as replica abcd1234"),
        (record(), ProcessFacts(True, 1000.0, OWNER, "ffff0000"), True, Verdict.CLEAN, "not marked as replica abcd1234"),
        (record(), ProcessFacts(True, 1000.0), True, Verdict.CLEAN, "not marked"),  # environment unreadable
        (record(pid=0), SAME, True, Verdict.CLEAN, "no process recorded"),
    ],
)
def test_a_recorded_replica_is_adopted_only_when_the_os_and_triton_confirm_it(recorded, facts, ready, verdict, because):
    judgement = judge(recorded, facts, OWNER, ready)
    assert judgement.verdict is verdict and because in judgement.reason, judgement


def test_the_identity_is_checked_before_readiness_counts():
    """A port now answered by another server must not vouch for a process that is not the replica's."""
    judgement = judge(record(), ProcessFacts(True, 1500.0, OWNER, "abcd1234"), OWNER, triton_ready=True)
    assert judgement.verdict is Verdict.CLEAN and "another process" in judgement.reason


def test_the_report_says_what_was_adopted_and_why_the_rest_was_not():
    report = AdoptionReport(("a", "b"), {"c": "its process (pid 9) is gone"}, stale_entries=1, processes_killed=3, regions_removed=2, took_s=0.25)
    assert report.summary() == (
        "earlier run: adopted 2 replica(s) still serving, removed 1 that were not (its process (pid 9) is gone), "
        "killed 3 leftover process(es) and 2 shared-memory region(s) in 0.25 s"
    )


def test_a_record_survives_a_round_trip_and_a_broken_one_is_reported_not_trusted(tmp_path):
    state = tmp_path / "state"
    original = record()
    save_record(state, original)
    save_record(state, record(replica_id="beef0001"))
    record_path(state, "garbage0").write_text("{not json")
    (state / "replicas" / "empty000.json").write_text('{"entry": {}, "process_started_at_s": 1, "log_path": "", "log_slot": 0, "log_offset": 0}')
    records, broken = load_records(state)
    assert [r.replica_id for r in records] == ["abcd1234", "beef0001"]
    assert records[0].entry == original.entry and records[0].process_started_at_s == 1000.0 and records[0].log_offset == 120
    assert sorted(p.name for p in broken) == ["empty000.json", "garbage0.json"]
    remove_record(state, "abcd1234")
    remove_record(state, "abcd1234")  # gone already: nothing to do
    assert [r.replica_id for r in load_records(state)[0]] == ["beef0001"]
    assert not list((state / "replicas").glob("*.tmp")), "a write leaves no temporary file"


SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def sleeper(**popen: object) -> subprocess.Popen:
    """A process that sleeps, returned once it runs Python: until its exec has finished, /proc shows an empty
    environment (the parent of a vfork resumes before the new program's environment is in place)."""
    process = subprocess.Popen([sys.executable, "-c", "print(flush=True); import time; time.sleep(60)"], stdout=subprocess.PIPE, **popen)
    assert process.stdout is not None and process.stdout.readline() == b"\n"
    return process


async def test_a_detached_child_leads_its_own_session_and_outlives_its_parent(tmp_path):
    """spawn(detached=True) in a parent that then dies with SIGKILL: the detached child runs on; a plain child dies."""
    script = f"""
import asyncio, os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / "services")!r})
from pathlib import Path
from ebbflow.runtime.process import spawn
async def main():
    detached = await spawn("detached", {SLEEPER!r}, Path({str(tmp_path / "d.log")!r}), detached=True)
    attached = await spawn("attached", {SLEEPER!r}, Path({str(tmp_path / "a.log")!r}), own_group=True)
    print(detached.pid, attached.pid, detached.started_at_s, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    detached_pid, attached_pid, started = parent.stdout.readline().split()
    detached = psutil.Process(int(detached_pid))
    try:
        assert os.getsid(detached.pid) == detached.pid and os.getpgid(detached.pid) == detached.pid
        assert abs(detached.create_time() - float(started)) < 0.05
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while psutil.pid_exists(int(attached_pid)) and process_alive(psutil.Process(int(attached_pid))):
            assert time.monotonic() < deadline, "the attached child did not die with its parent"
            await asyncio.sleep(0.05)
        assert process_alive(detached), "the detached child died with its parent"
    finally:
        detached.kill()


async def test_an_adopted_process_is_followed_by_polling_and_stopped_through_its_group(tmp_path):
    """Not our child (started by a parent that is gone): wait() sees it exit; stop() reaches its group."""
    child = await spawn("sleeper", SLEEPER, tmp_path / "s.log", detached=True)
    adopted = AdoptedProcess("sleeper", psutil.Process(child.pid), poll_s=0.05)
    assert adopted.running and adopted.started_at_s == pytest.approx(child.started_at_s, abs=0.05)
    waiter = asyncio.create_task(adopted.wait())
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await adopted.stop(5.0)
    await asyncio.wait_for(waiter, 5)
    assert not adopted.running and await child.process.wait() == -signal.SIGTERM

    ignoring = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True); time.sleep(60)"
    stubborn = await spawn("stubborn", [sys.executable, "-c", ignoring], tmp_path / "t.log", detached=True)
    while "ignoring" not in (tmp_path / "t.log").read_text():
        await asyncio.sleep(0.02)
    await AdoptedProcess("stubborn", psutil.Process(stubborn.pid), poll_s=0.05).stop(0.5)
    assert await asyncio.wait_for(stubborn.process.wait(), 5) == -signal.SIGKILL


def test_observe_reads_the_start_time_and_the_markers(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    process = sleeper(env={**os.environ, **replica_markers(state, "abcd1234")})
    try:
        facts, handle = observe(process.pid)
        assert facts.running and handle is not None and facts.owner == owner_of(state) and facts.replica_id == "abcd1234"
        assert facts.started_at_s == pytest.approx(psutil.Process(process.pid).create_time())
    finally:
        process.kill()
        process.wait()
    assert observe(process.pid)[0].running is False


def test_stop_leftover_replicas_stops_the_recorded_servers_their_helpers_and_shared_memory(tmp_path):
    """What `ebbflow down` does with no `ebbflow up` running: the recorded server gets SIGTERM, a helper marked with
    the replica (a stub) is killed, the regions and records go; a process whose pid a record names but which is
    not the replica's is left alone."""
    state, shm = tmp_path / "state", tmp_path / "shm"
    state.mkdir()
    shm.mkdir()
    server = sleeper(env={**os.environ, **replica_markers(state, "abcd1234")}, start_new_session=True)
    helper = sleeper(env={**os.environ, **replica_markers(state, "abcd1234")})
    stranger = sleeper()  # a pid another record names, after reuse
    try:
        save_record(state, record(server.pid, psutil.Process(server.pid).create_time(), "abcd1234"))
        save_record(state, record(stranger.pid, 12.0, "dead0000"))
        for name in ("ebbflow_abcd1234_shm_a", "ebbflow_dead0000_shm_b", "ebbflow_other999_shm"):
            (shm / name).write_bytes(b"x")
        stopped = stop_leftover_replicas(state, grace_s=5.0, shm_dir=shm)
        assert (stopped.replicas, stopped.processes, stopped.regions) == (1, 1, 2), stopped
        assert server.wait(5) == -signal.SIGTERM and helper.wait(5) == -signal.SIGKILL
        assert stranger.poll() is None, "a process that is not the replica's was signalled"
        assert sorted(p.name for p in shm.iterdir()) == ["ebbflow_other999_shm"]
        assert load_records(state) == ([], []) and not find_leftovers(state)
        assert stop_leftover_replicas(state, shm_dir=shm) == type(stopped)(0, 0, 0)
    finally:
        for process in (server, helper, stranger):
            process.kill()
            process.wait()
