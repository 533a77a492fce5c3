"""Each running replica's record on this machine, so a restarted actuator, or `ebbflow down` with none running, finds it.

Replicas outlive the actuator that started them (they are the data plane).
What the next actuator needs to take one over is written to
`<state-dir>/replicas/<replica_id>.json` as soon as its process exists, again
on every change of its registry entry, and removed once it is gone: the
registry entry (ports, model, shape, GPU slot, pid), the process's start time
(the pid alone may name another process by then) and its log.

A file, not only the entry in NATS KV: it sits beside the replica, is written
before NATS hears of the replica and while NATS is away, and is read without
connecting to NATS (`ebbflow down` connects to none). It is a claim, not a
fact: the next actuator adopts a replica only once the OS and Triton confirm
it (actuator.adoption).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from ebbflow.v1 import registry_pb2

log = logging.getLogger(__name__)

RECORDS_DIR = "replicas"
"""Under the state directory: one `<replica_id>.json` per replica."""


@dataclass(frozen=True)
class ReplicaRecord:
    """What taking over a running replica needs."""

    entry: registry_pb2.ReplicaEntry
    """Its registry entry as last written: model, id, ports, pid, shape, GPU slot, generation, times."""
    process_started_at_s: float
    """When the OS started its tritonserver (psutil create_time, Unix seconds): pid and this name one process."""
    log_path: str
    log_slot: int
    """Its model's log slot (actuator.lifecycle), so a new replica of the model does not write into its log."""
    log_offset: int
    """Where its run's output begins in that log (for the reason of a failure)."""

    @property
    def replica_id(self) -> str:
        return self.entry.replica_id

    @property
    def pid(self) -> int:
        return self.entry.pid


def records_dir(state_dir: Path) -> Path:
    return state_dir / RECORDS_DIR


def record_path(state_dir: Path, replica_id: str) -> Path:
    return records_dir(state_dir) / f"{replica_id}.json"


def save_record(state_dir: Path, record: ReplicaRecord) -> None:
    """Write the record whole or not at all (a temporary file renamed over the old one): a crash mid-write leaves
    the previous record, never half of one."""
    path = record_path(state_dir, record.replica_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "entry": json_format.MessageToDict(record.entry, preserving_proto_field_name=True),
        "process_started_at_s": record.process_started_at_s,
        "log_path": record.log_path,
        "log_slot": record.log_slot,
        "log_offset": record.log_offset,
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(body, indent=1))
    os.replace(temporary, path)


def remove_record(state_dir: Path, replica_id: str) -> None:
    record_path(state_dir, replica_id).unlink(missing_ok=True)


def parse_record(text: str) -> ReplicaRecord:
    """A record from its file's text; ValueError when it is not one."""
    try:
        body = json.loads(text)
        entry = json_format.ParseDict(body["entry"], registry_pb2.ReplicaEntry())
        record = ReplicaRecord(entry, float(body["process_started_at_s"]), str(body["log_path"]), int(body["log_slot"]), int(body["log_offset"]))
    except (ValueError, KeyError, TypeError, json_format.ParseError) as error:
        raise ValueError(f"not a replica record: {error}") from None
    if not record.replica_id or not record.entry.model:
        raise ValueError("not a replica record: no replica id or model")
    return record


def load_records(state_dir: Path) -> tuple[list[ReplicaRecord], list[Path]]:
    """Every replica recorded for the state directory, and the files that are not readable records (a write cut
    short by a full disk, an edit by hand): those name no process anyone could verify."""
    records: list[ReplicaRecord] = []
    broken: list[Path] = []
    for path in sorted(records_dir(state_dir).glob("*.json")):
        try:
            records.append(parse_record(path.read_text()))
        except (OSError, ValueError) as error:
            log.warning("ignoring replica record %s: %s", path, error)
            broken.append(path)
    return records, broken
