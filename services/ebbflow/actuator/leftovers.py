"""What replicas left on this machine: found, checked, and removed; and every replica of a state directory stopped.

Replicas are detached (runtime.process.spawn): they outlive the actuator, and
a restarted one adopts those that still serve (actuator.adoption). Whatever it
does not adopt is removed here, as is what a replica that ends leaves: a
SIGKILLed tritonserver unlinks no shared memory, and its Python-backend stubs
and any helper a model started live on. Every replica's environment carries
two markers, which its stubs and their children inherit; processes are found
and killed by those markers, by pid (never by a recorded group id alone: an
id reused since is not ours), and the replicas' /dev/shm regions removed.
`stop_leftover_replicas` stops every replica recorded for a state directory
when no `ebbflow up` runs there any more (`ebbflow down`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable

import psutil

from ebbflow.actuator.adoption import ProcessFacts, identity_problem
from ebbflow.actuator.records import ReplicaRecord, load_records, remove_record
from ebbflow.runtime.process import process_alive
from ebbflow.runtime.triton import SHM_DIR, remove_shm_regions, shm_prefix

log = logging.getLogger(__name__)

REPLICA_ID_ENV = "EBBFLOW_REPLICA_ID"
"""The replica a process belongs to (tritonserver, its stubs, their children)."""
OWNER_ENV = "EBBFLOW_REPLICA_OWNER"
"""The state directory of the ebbflow that started it (resolved path)."""


def owner_of(state_dir: Path) -> str:
    """How a replica's environment names its state directory."""
    return str(state_dir.resolve())


def replica_markers(state_dir: Path, replica_id: str) -> dict[str, str]:
    """The environment that marks a replica's processes as this state directory's."""
    return {REPLICA_ID_ENV: replica_id, OWNER_ENV: owner_of(state_dir)}


def _environ(path: Path) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except OSError:  # gone, or another user's
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def find_leftovers(state_dir: Path, proc_root: Path = Path("/proc"), own_pid: int | None = None) -> dict[int, str]:
    """Processes marked as replicas of `state_dir`, as pid -> replica id (this process excluded)."""
    owner = owner_of(state_dir)
    own = os.getpid() if own_pid is None else own_pid
    found: dict[int, str] = {}
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        environ = _environ(entry / "environ")
        if environ.get(OWNER_ENV) == owner and environ.get(REPLICA_ID_ENV):
            found[int(entry.name)] = environ[REPLICA_ID_ENV]
    return found


def observe(pid: int, proc_root: Path = Path("/proc")) -> tuple[ProcessFacts, psutil.Process | None]:
    """What the OS says about `pid` now, and the process itself while it runs (to be signalled through psutil,
    which refuses once the pid names another process)."""
    try:
        process = psutil.Process(pid) if pid > 0 else None
        if process is None or not process_alive(process):
            return ProcessFacts(running=False), None
        environ = _environ(proc_root / str(pid) / "environ")
        facts = ProcessFacts(True, float(process.create_time()), environ.get(OWNER_ENV, ""), environ.get(REPLICA_ID_ENV, ""))
        return facts, process
    except psutil.Error:
        return ProcessFacts(running=False), None


def kill_marked(state_dir: Path, only: Collection[str] | None = None, keep: Collection[str] = ()) -> dict[int, str]:
    """SIGKILL the processes marked as replicas of `state_dir` (those of `only` when given, never those of `keep`);
    returns them as pid -> replica id."""
    found = {pid: rid for pid, rid in find_leftovers(state_dir).items() if (only is None or rid in only) and rid not in keep}
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return found


def remove_replica_leftovers(state_dir: Path, replica_id: str, shm_dir: Path = SHM_DIR) -> tuple[dict[int, str], list[str]]:
    """What one replica that is gone left: its marked processes (stubs, a model's helpers) and shared memory."""
    killed = kill_marked(state_dir, only={replica_id})
    return killed, remove_shm_regions(shm_prefix(replica_id), shm_dir)


def sweep_leftovers(
    state_dir: Path, replica_ids: Iterable[str], keep: Collection[str] = (), shm_dir: Path = SHM_DIR
) -> tuple[dict[int, str], list[str]]:
    """Kill the processes an earlier run's replicas left, but those of the replicas in `keep` (adopted), and remove
    their and `replica_ids`' shared memory. Returns what was killed (pid -> replica id) and the regions removed."""
    killed = kill_marked(state_dir, keep=keep)
    removed = [name for rid in sorted(set(replica_ids) | set(killed.values())) for name in remove_shm_regions(shm_prefix(rid), shm_dir)]
    if killed or removed:
        log.warning("an earlier run left %d replica process(es) (%s) and shared memory %s; removed", len(killed), sorted(killed), removed)
    return killed, removed


@dataclass(frozen=True)
class Stopped:
    """What `stop_leftover_replicas` found and stopped."""

    replicas: int
    """Recorded replicas whose tritonserver was still running."""
    processes: int
    """Marked processes still there after the servers' grace (stubs, helpers, unrecorded servers), killed."""
    regions: int
    """Shared-memory regions removed."""


def stop_leftover_replicas(state_dir: Path, grace_s: float = 15.0, shm_dir: Path = SHM_DIR) -> Stopped:
    """Stop every replica of `state_dir` when no actuator owns them any more (`ebbflow down` with no `ebbflow up`).

    Each recorded tritonserver that is verifiably still the replica's gets SIGTERM and up to grace_s to finish its
    requests and unload (its stubs then clean up their own shared memory); then every process still marked with
    the state directory is killed, and the replicas' shared memory and records removed. Registry entries in NATS
    stay: the next actuator deletes every entry it does not adopt.
    """
    records, broken = load_records(state_dir)
    owner = owner_of(state_dir)
    running = [process for record in records if (process := _verified(record, owner)) is not None]
    for process in running:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    deadline = time.monotonic() + grace_s
    while any(process_alive(p) for p in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = kill_marked(state_dir)
    regions = [name for rid in sorted({r.replica_id for r in records} | set(killed.values())) for name in remove_shm_regions(shm_prefix(rid), shm_dir)]
    for record in records:
        remove_record(state_dir, record.replica_id)
    for path in broken:
        path.unlink(missing_ok=True)
    stopped = Stopped(len(running), len(killed), len(regions))
    if records or killed or regions:
        log.info("stopped the replicas left in %s: %s", state_dir, stopped)
    return stopped


def _verified(record: ReplicaRecord, owner: str) -> psutil.Process | None:
    """The record's tritonserver, when the OS confirms it is still that replica's."""
    facts, process = observe(record.pid)
    return process if not identity_problem(record, facts, owner) else None
