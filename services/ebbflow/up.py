"""The `ebbflow up` process: its state directory and lock, its logging, the stack's lifetime, and `down`.

One `ebbflow up` runs per state directory. It holds the directory's lock for its whole life, writes
`state.json` (its pid and the addresses of NATS, the router, the control API and `/metrics`) once the
stack has started, and removes it when the stack has stopped. The CLI's other commands find the
running stack through that file (`read_state`); `ebbflow down` through the lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ebbflow.runtime.config import Config
from ebbflow.runtime.errors import AlreadyRunningError, EbbflowError

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    if os.environ.get("EBBFLOW_STATE_DIR"):
        return Path(os.environ["EBBFLOW_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ebbflow"


def say(line: str, stream: TextIO = sys.stdout) -> None:
    """ebbflow's own short terminal lines (child processes log to files)."""
    print(f"{time.strftime('%H:%M:%S')} {line}", file=stream, flush=True)


class StateDirLock:
    """One `ebbflow up` per state directory, enforced by an advisory lock that dies with the process."""

    def __init__(self, state_dir: Path) -> None:
        self.path = self.path_of(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise AlreadyRunningError(
                f"another ebbflow up (pid {holder}) is using state directory {state_dir}; stop it or pass another --state-dir"
            ) from None
        self._file.truncate(0)
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        self._file.close()

    @staticmethod
    def path_of(state_dir: Path) -> Path:
        return state_dir / "lock"

    @classmethod
    def holder(cls, state_dir: Path) -> int | None:
        """The pid of the `ebbflow up` holding this state directory's lock (0: unreadable); None when none holds it."""
        try:
            with open(cls.path_of(state_dir)) as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    lock.seek(0)
                    text = lock.read().strip()
                    return int(text) if text.isdigit() else 0
                return None  # free: nothing runs (closing the file drops the probe's lock)
        except FileNotFoundError:
            return None


def read_state(state_dir: Path) -> dict[str, Any]:
    """The running stack's pid and addresses, as its `ebbflow up` wrote them."""
    try:
        return dict(json.loads((state_dir / STATE_FILE).read_text()))
    except FileNotFoundError:
        raise EbbflowError(f"no running ebbflow up found in state directory {state_dir}; start one with `ebbflow up` or pass --state-dir") from None


def _configure_logging(state_dir: Path, verbose: bool) -> None:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "ebbflow.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)


def _check_port_free(host: str, port: int) -> None:
    """Fail at once, before starting anything, when the router port is taken."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise AlreadyRunningError(
                f"cannot listen on {host}:{port}: {error.strerror} (another ebbflow up?); pick another with --router-port"
            ) from None


async def _run(config: Config, state_dir: Path, nats_url: str | None) -> int:
    from ebbflow.runtime.nats_server import NatsSupervisor
    from ebbflow.stack import Stack

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    _check_port_free(config.router.host, config.router.port)
    nats: NatsSupervisor | None = None
    supervising: asyncio.Task[None] | None = None
    nats_stop = asyncio.Event()  # the supervisor outlives the stack: NATS is drained last
    stack: Stack | None = None
    try:
        if nats_url is None:
            nats = NatsSupervisor(state_dir, say)
            nats_url = await nats.start()
            supervising = asyncio.create_task(nats.run(nats_stop), name="nats-server supervisor")
            say(f"nats-server with JetStream at {nats_url} (started again if it dies)")
        stack = Stack(config, nats_url, state_dir, say, nats)
        addresses = await stack.start()
        (state_dir / STATE_FILE).write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "nats_url": nats_url,
                    "router": addresses.router,
                    "control": addresses.control,
                    "metrics": addresses.metrics,
                }
            )
        )
        say(f"router listening on {addresses.router}; status API {addresses.control}; metrics http://{addresses.metrics}/metrics")
        serving = [m.model for m in config.models if m.min_replicas > 0]
        waiter = asyncio.ensure_future(stack.wait_serving(serving, config.actuator.ready_timeout_s))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        if waiter.done() and waiter.exception() is None:
            say(f"ebbflow ready: Triton gRPC clients can use {addresses.router} (models: {', '.join(m.model for m in config.models)})")
        elif waiter.done():
            say(f"error: models did not come up: {waiter.exception() or 'timeout'}; see {state_dir / 'logs'}", sys.stderr)
            return 1
        else:
            waiter.cancel()
        await stop.wait()
        say("stopping")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)  # a second Ctrl-C during shutdown must not restart anything
            signal.signal(sig, signal.SIG_IGN)
        if stack is not None:
            await stack.stop()
        nats_stop.set()
        if supervising is not None:
            await asyncio.gather(supervising, return_exceptions=True)
        if nats is not None:
            await nats.stop(5.0)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        say("stopped")


def up(config: Config, state_dir: Path, nats_url: str | None, verbose: bool) -> int:
    """Run the stack in the foreground until SIGINT or SIGTERM; the exit status."""
    lock = StateDirLock(state_dir)
    try:
        _configure_logging(state_dir, verbose)
        return asyncio.run(_run(config, state_dir, nats_url))
    finally:
        lock.release()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # a zombie has exited; its parent reaps it
    except psutil.NoSuchProcess:
        return False


def down(state_dir: Path, timeout_s: float) -> int:
    """SIGTERM to the `ebbflow up` of this state directory, then wait until it has released the directory."""
    pid = StateDirLock.holder(state_dir)
    if pid is None:
        (state_dir / STATE_FILE).unlink(missing_ok=True)  # left by an `up` that was killed: nothing answers there
        raise EbbflowError(f"no running ebbflow up found in state directory {state_dir}; nothing to stop")
    if not pid:
        raise EbbflowError(f"the lock of {state_dir} is held but names no process; stop that ebbflow up with Ctrl-C or kill")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # exited between the probe and the signal: the wait below sees the lock free
    say(f"stopping ebbflow up (pid {pid}) in {state_dir}")
    deadline = time.monotonic() + timeout_s
    while StateDirLock.holder(state_dir) is not None or _alive(pid):  # the lock goes a moment before the process exits
        if time.monotonic() > deadline:
            raise EbbflowError(f"ebbflow up (pid {pid}) has not stopped {timeout_s:g} s after SIGTERM; see {state_dir / 'logs'}")
        time.sleep(0.2)
    say("stopped")
    return 0
