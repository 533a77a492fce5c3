"""Reading processes from /proc: what finds and watches a process this one did not start (the router's front)."""

from __future__ import annotations

import os
from pathlib import Path

from ebbflow.runtime.process import find_processes, process_argv, process_start_ticks


def fake_process(root: Path, pid: int, argv: list[str], state: str = "S", start: int = 4242, name: str = "haproxy") -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
    fields = [state, "1", str(pid), str(pid)] + ["0"] * 15 + [str(start), "0"]  # fields 3.. of proc(5); starttime is 22
    (folder / "stat").write_text(f"{pid} ({name}) {' '.join(fields)}\n")


def test_a_start_time_names_a_live_process_and_none_a_gone_or_zombie_one(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, ["haproxy"], start=777, name="odd) name")  # the name may hold ") "
    fake_process(tmp_path, 11, ["haproxy"], state="Z")
    assert process_start_ticks(10, tmp_path) == 777
    assert process_start_ticks(11, tmp_path) is None
    assert process_start_ticks(12, tmp_path) is None
    assert process_start_ticks(os.getpid()) is not None  # the real /proc reads the same way


def test_processes_are_found_by_arguments_in_a_row(tmp_path: Path) -> None:
    config = "/state/haproxy/haproxy.cfg"
    fake_process(tmp_path, 20, ["/usr/sbin/haproxy", "-db", "-f", config])
    fake_process(tmp_path, 21, ["/usr/sbin/haproxy", "-db", "-f", config, "-x", "/s", "-sf", "20"])
    fake_process(tmp_path, 22, ["/usr/sbin/haproxy", "-db", "-f", "/other/haproxy/haproxy.cfg"])
    fake_process(tmp_path, 23, ["/usr/sbin/haproxy", "-f", config], state="Z")  # exited, not reaped yet
    fake_process(tmp_path, 24, ["vi", config])  # names the file, not after -f
    (tmp_path / "self").mkdir()
    assert find_processes(("-f", config), tmp_path) == [20, 21]
    assert process_argv(21, tmp_path)[-1] == "20" and process_argv(99, tmp_path) == []
