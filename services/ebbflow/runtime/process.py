"""Child processes that die with their parent and stop in order, and detached ones that outlive it.

Children stay in ebbflow's process group (so SIGTERM to the group reaches
them) and get PR_SET_PDEATHSIG, so a SIGKILLed parent leaves no orphans.
A child that starts helpers of its own (tritonserver's Python-backend stubs)
can instead lead its own process group: it alone gets the polite signal (so
it can finish its work through the helpers), SIGKILL goes to the whole group,
and `kill_group` reaps helpers that outlived it.

A detached child (a Triton replica: the data plane) leads its own session and
gets no PR_SET_PDEATHSIG: it keeps serving when this process dies or hangs.
A later process can take it over as an `AdoptedProcess`: not its child, so
its exit is seen by polling, and psutil's identity check (pid and start time)
keeps a pid reused since from being signalled as ours.

A data-plane process that must keep serving while its starter is down (the
router's HAProxy front) is a `DetachedProcess` instead: its own session, no
PR_SET_PDEATHSIG, and no asyncio transport (one kills its process when it is
closed or collected). Its starter, or a later process that finds it by its
command line and adopts it, watches it by polling: only a parent can wait for
a process, and a found one has none here.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For preexec_fn: the child gets SIGKILL when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _lead_own_group() -> None:
    die_with_parent()
    os.setpgid(0, 0)


@dataclass
class ChildProcess:
    """A started child: its OS process and where it logs."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    argv: Sequence[str] = field(default_factory=tuple)
    own_group: bool = False
    """Whether the child leads its own process group (its pid is the group id)."""
    started_at_s: float = 0.0
    """When the OS started it (psutil's create_time, Unix seconds; 0 if it was gone at once): with the pid, it names
    this one process, so a record of it cannot be mistaken for a later process given the same pid."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def wait(self) -> int:
        """Until it exits; its exit code (negative: the signal that killed it)."""
        return await self.process.wait()

    async def stop(self, timeout_s: float, sig: int = signal.SIGTERM) -> int:
        """Send `sig`, wait up to timeout_s, then SIGKILL. Returns the exit code."""
        if self.running:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except asyncio.TimeoutError:
                log.warning("%s (pid %d) ignored %s for %.0f s; killing it", self.name, self.pid, signal.Signals(sig).name, timeout_s)
                self.process.kill()
                self.kill_group()
        return await self.process.wait()

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the child's own process group (nothing without one).

        Safe after the leader has exited and been reaped: Linux does not hand out a
        pid that is still some process's group id, so the id names only our helpers.
        """
        if not self.own_group:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def tail(self, lines: int = 20) -> str:
        """Last lines of the child's log, for error messages."""
        return log_tail(self.log_path, lines)


def log_tail(log_path: Path, lines: int = 20) -> str:
    """Last lines of a process's log, for error messages ("" when there is none)."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    own_group: bool = False,
    detached: bool = False,
) -> ChildProcess:
    """Start argv with output appended to log_path. The child dies with this process (and leads its own group with
    own_group), unless `detached`: then it leads its own session and process group and outlives this process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            # Not process_group=: uvloop (the router's loop) refuses it.
            preexec_fn=None if detached else (_lead_own_group if own_group else die_with_parent),
            start_new_session=detached,
        )
    log.debug("started %s (pid %d%s): %s", name, process.pid, ", detached" if detached else "", " ".join(argv))
    return ChildProcess(
        name=name, process=process, log_path=log_path, argv=tuple(argv), own_group=own_group or detached, started_at_s=start_time(process.pid)
    )


def start_time(pid: int) -> float:
    """When the OS started process `pid` (Unix seconds), 0 when there is none."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def process_alive(process: psutil.Process) -> bool:
    """Whether the process psutil names still runs: the same pid and start time, and not exited (a zombie has
    exited; a parent that is not ours may never reap it)."""
    try:
        return bool(process.is_running()) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class AdoptedProcess:
    """A detached process an earlier ebbflow started and this one now owns, leading its own process group.

    Not our child: no exit code and no SIGCHLD, so `wait` polls, and every signal goes through psutil, which refuses
    when the pid now names another process. Same methods as ChildProcess where the actuator uses them."""

    name: str
    process: psutil.Process
    poll_s: float = 0.2

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def started_at_s(self) -> float:
        return float(self.process.create_time())

    @property
    def running(self) -> bool:
        return process_alive(self.process)

    async def wait(self) -> None:
        """Until it exits. Its exit code went to its parent (not us): None."""
        while self.running:
            await asyncio.sleep(self.poll_s)

    async def stop(self, timeout_s: float, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the leader, wait up to timeout_s, then SIGKILL to the group."""
        if self.running:
            try:
                self.process.send_signal(sig)
            except psutil.Error:
                pass
            try:
                await asyncio.wait_for(self.wait(), timeout_s)
            except asyncio.TimeoutError:
                log.warning("%s (pid %d) ignored %s for %.0f s; killing it", self.name, self.pid, signal.Signals(sig).name, timeout_s)
                self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL its process group, only while the leader is still this process (a zombie still is) and so still
        holds the group id. Once it is gone, what its group left is found by the replica's environment markers instead."""
        try:
            if not self.process.is_running():
                return
            os.killpg(self.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


def process_start_ticks(pid: int, proc_root: Path = Path("/proc")) -> int | None:
    """When `pid` started, in clock ticks after boot; None when no such live process exists (gone, or a zombie).

    With the pid it names one process for good: a pid reused later has another start time."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name, in parentheses, may hold spaces
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of proc(5): fields[0] is field 3


def process_argv(pid: int, proc_root: Path = Path("/proc")) -> list[str]:
    """The command line of `pid` ([] when it is gone or not readable)."""
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]]


def find_processes(args: Sequence[str], proc_root: Path = Path("/proc")) -> list[int]:
    """Live processes whose command line holds `args` in a row (e.g. ("-f", "/state/haproxy/haproxy.cfg")), this one excluded."""
    wanted, found = list(args), []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = process_argv(int(entry.name), proc_root)
        if any(argv[i : i + len(wanted)] == wanted for i in range(len(argv) - len(wanted) + 1)):
            if process_start_ticks(int(entry.name), proc_root) is not None:
                found.append(int(entry.name))
    return sorted(found)


@dataclass
class DetachedProcess:
    """A process that outlives the one that started it: started here (`popen`), or found running and adopted."""

    name: str
    pid: int
    log_path: Path
    started_ticks: int | None
    """`process_start_ticks` when it was started or found: a later process given the same pid is not this one."""
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def found(cls, name: str, pid: int, log_path: Path) -> DetachedProcess:
        """A running process this one did not start."""
        return cls(name, pid, log_path, process_start_ticks(pid))

    @property
    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None  # also reaps it: a child that exited stays a zombie until waited for
        return self.started_ticks is not None and process_start_ticks(self.pid) == self.started_ticks

    def exit_description(self) -> str:
        """How it ended, as far as this process can know (only a parent learns the exit code)."""
        code = self.popen.returncode if self.popen is not None else None
        if code is None:
            return "exited"
        return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"

    def send(self, sig: int) -> None:
        if self.running:
            try:
                os.kill(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    async def wait(self, timeout_s: float, poll_s: float = 0.05) -> bool:
        """Until it has exited (True) or timeout_s has passed (False): polled, since it may not be our child."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.running:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return True

    async def stop(self, timeout_s: float, sig: int = signal.SIGTERM) -> None:
        """Send `sig`, wait up to timeout_s, then SIGKILL."""
        self.send(sig)
        if not await self.wait(timeout_s):
            log.warning("%s (pid %d) ignored %s for %g s; killing it", self.name, self.pid, signal.Signals(sig).name, timeout_s)
            self.send(signal.SIGKILL)
            await self.wait(5.0)

    def tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)


def start_detached(name: str, argv: Sequence[str], log_path: Path) -> DetachedProcess:
    """Start argv in a session of its own with output appended to log_path; unlike `spawn`'s children it keeps
    running when this process dies, and only an explicit signal stops it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    log.debug("started %s (pid %d, detached): %s", name, popen.pid, " ".join(argv))
    return DetachedProcess(name, popen.pid, log_path, process_start_ticks(popen.pid), popen)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago: all held open while the OS picks, since one socket
    closed before the next is bound can be given the same port again (a replica once got one port for both
    HTTP and metrics, and tritonserver refused to start)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def venv_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for children: this interpreter's bin first on PATH, its LIBDIR on LD_LIBRARY_PATH.

    Works when ebbflow runs by absolute path without an activated venv.
    """
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [libdir, env.get("LD_LIBRARY_PATH", "")] if p)
    return env
