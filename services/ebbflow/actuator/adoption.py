"""Whether a replica an earlier actuator recorded is adopted or cleaned, from what the OS and Triton say now. Pure.

A restarted actuator must not cold-start a fleet that is serving, nor route
to something that only looks like a replica. A record (actuator.records) is
adopted when all of these hold, checked in this order:

1. a process with the recorded pid runs (a zombie has exited);
2. it is the recorded process: it started when the record says (a pid is
   reused once its process is gone) ...
3. ... and its environment names this state directory and this replica
   (actuator.leftovers' markers, which only ebbflow sets);
4. Triton answers ready for the record's model on the record's HTTP port.

Anything else is cleaned: its processes killed, its shared memory, record and
registry entry removed. Triton is asked only once the process is known to be
the replica's, so a port taken over by someone else never vouches for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ebbflow.actuator.records import ReplicaRecord

START_TIME_TOLERANCE_S = 0.05
"""Start times are read from the kernel in clock ticks (10 ms); two readings of one process agree to well within this."""


@dataclass(frozen=True)
class ProcessFacts:
    """What the OS says now about the pid a record names."""

    running: bool
    """A process with that pid exists and has not exited."""
    started_at_s: float = 0.0
    """Its start time (psutil create_time, Unix seconds); 0 when none runs."""
    owner: str = ""
    """The state directory its environment names (leftovers.OWNER_ENV), "" when unreadable."""
    replica_id: str = ""
    """The replica its environment names (leftovers.REPLICA_ID_ENV)."""


class Verdict(Enum):
    ADOPT = "adopt"
    CLEAN = "clean"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str


def identity_problem(record: ReplicaRecord, facts: ProcessFacts, owner: str) -> str:
    """Why the recorded pid is not (any more) the replica's tritonserver; "" when it is."""
    if record.pid <= 0:
        return "no process recorded"
    if not facts.running:
        return f"its process (pid {record.pid}) is gone"
    if abs(facts.started_at_s - record.process_started_at_s) > START_TIME_TOLERANCE_S:
        return f"pid {record.pid} now belongs to another process (started {facts.started_at_s:.2f}, recorded {record.process_started_at_s:.2f})"
    if facts.owner != owner or facts.replica_id != record.replica_id:
        return f"pid {record.pid} is not marked as replica {record.replica_id} of this state directory"
    return ""


def judge(record: ReplicaRecord, facts: ProcessFacts, owner: str, triton_ready: bool) -> Judgement:
    """Adopt or clean, with the reason. `triton_ready` only counts for the recorded process (see the module's rule)."""
    problem = identity_problem(record, facts, owner)
    if problem:
        return Judgement(Verdict.CLEAN, problem)
    entry = record.entry
    if not triton_ready:
        return Judgement(Verdict.CLEAN, f"running but Triton does not answer ready for {entry.model} on port {entry.http_port}")
    return Judgement(Verdict.ADOPT, f"pid {record.pid} running and ready for {entry.model} on port {entry.http_port}")


@dataclass(frozen=True)
class AdoptionReport:
    """What a restarted actuator found of the earlier run, and did with it."""

    adopted: tuple[str, ...] = ()
    """Replica ids taken over, serving throughout."""
    cleaned: dict[str, str] = field(default_factory=dict)
    """Recorded replica id -> why it was not adopted."""
    stale_entries: int = 0
    """Registry entries with no adoptable replica behind them, deleted."""
    processes_killed: int = 0
    regions_removed: int = 0
    took_s: float = 0.0

    def summary(self) -> str:
        """One line for the terminal."""
        parts = [f"adopted {len(self.adopted)} replica(s) still serving"]
        if self.cleaned:
            reasons = sorted(set(self.cleaned.values()))
            parts.append(f"removed {len(self.cleaned)} that were not ({'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''})")
        if self.processes_killed or self.regions_removed:
            parts.append(f"killed {self.processes_killed} leftover process(es) and {self.regions_removed} shared-memory region(s)")
        return f"earlier run: {', '.join(parts)} in {self.took_s:.2f} s"
