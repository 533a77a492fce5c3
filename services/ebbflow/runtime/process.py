"""Child processes that die with their parent and stop in order.

Children stay in ebbflow's process group (so SIGTERM to the group reaches
them) and get PR_SET_PDEATHSIG, so a SIGKILLed parent leaves no orphans.
A child that starts helpers of its own (tritonserver's Python-backend stubs)
can instead lead its own process group: it alone gets the polite signal (so
it can finish its work through the helpers), SIGKILL goes to the whole group,
and `kill_group` reaps helpers that outlived it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For preexec_fn: the child gets SIGKILL when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class ChildProcess:
    """A started child: its OS process and where it logs."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    argv: Sequence[str] = field(default_factory=tuple)
    own_group: bool = False
    """Whether the child leads its own process group (its pid is the group id)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

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
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def spawn(
    name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None, own_group: bool = False
) -> ChildProcess:
    """Start argv with output appended to log_path; the child dies with this process (and leads its own group with own_group)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            preexec_fn=die_with_parent,
            process_group=0 if own_group else None,
        )
    log.debug("started %s (pid %d): %s", name, process.pid, " ".join(argv))
    return ChildProcess(name=name, process=process, log_path=log_path, argv=tuple(argv), own_group=own_group)


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
