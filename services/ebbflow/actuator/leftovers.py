"""What replicas of an earlier run left on this machine, found and removed before a new run starts any.

While the actuator runs, a replica that ends is cleaned up at once (its
process group killed, its shared memory removed). When the actuator itself
is SIGKILLed, each tritonserver dies with it (PR_SET_PDEATHSIG) but nothing
cleans up after them: the Python-backend stubs unlink no shared memory, and a
helper process a model started lives on. Every replica's environment carries
two markers, which its stubs and their children inherit; at the next start
the processes whose environment names this state directory are killed by pid
(never by group id alone: an id reused since is not ours) and the replicas'
/dev/shm regions removed.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Iterable

from ebbflow.runtime.triton import SHM_DIR, remove_shm_regions, shm_prefix

log = logging.getLogger(__name__)

REPLICA_ID_ENV = "EBBFLOW_REPLICA_ID"
"""The replica a process belongs to (tritonserver, its stubs, their children)."""
OWNER_ENV = "EBBFLOW_REPLICA_OWNER"
"""The state directory of the ebbflow that started it (resolved path)."""


def replica_markers(state_dir: Path, replica_id: str) -> dict[str, str]:
    """The environment that marks a replica's processes as this state directory's."""
    return {REPLICA_ID_ENV: replica_id, OWNER_ENV: str(state_dir.resolve())}


def _environ(path: Path) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except OSError:  # gone, or another user's
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def find_leftovers(state_dir: Path, proc_root: Path = Path("/proc"), own_pid: int | None = None) -> dict[int, str]:
    """Processes marked as replicas of `state_dir`, as pid -> replica id (this process excluded)."""
    owner = str(state_dir.resolve())
    own = os.getpid() if own_pid is None else own_pid
    found: dict[int, str] = {}
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        environ = _environ(entry / "environ")
        if environ.get(OWNER_ENV) == owner and environ.get(REPLICA_ID_ENV):
            found[int(entry.name)] = environ[REPLICA_ID_ENV]
    return found


def sweep_leftovers(state_dir: Path, replica_ids: Iterable[str], shm_dir: Path = SHM_DIR) -> tuple[dict[int, str], list[str]]:
    """Kill the processes an earlier run's replicas left, and remove their and `replica_ids`' shared memory.
    Returns what was killed (pid -> replica id) and the regions removed."""
    killed = find_leftovers(state_dir)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    removed = [name for rid in sorted(set(replica_ids) | set(killed.values())) for name in remove_shm_regions(shm_prefix(rid), shm_dir)]
    if killed or removed:
        log.warning("an earlier run left %d replica process(es) (%s) and shared memory %s; removed", len(killed), sorted(killed), removed)
    return killed, removed
