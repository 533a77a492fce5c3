"""The chaos suite: steady load through a running `ebbflow up`, one fault at a time, and what each cost.

Each fault is a SIGKILL, or a SIGSTOP held for --stop-s (20 s by default), of one process: each control-plane
service (collector, forecaster, scheduler, actuator), the router service, the HAProxy front, one Triton replica,
the nats-server, and the four control-plane services at once. For each it records requests sent, succeeded and
failed (with codes), seconds until the supervisor has the service back, desired and ready replicas after, and
whether the fault started a new replica. The short form runs in `make test` (tests/e2e/test_chaos.py, 5 s stops,
the control-plane faults); this is the long form.

    .venv/bin/python benchmarks/chaos.py [--stop-s 20] [--faults collector,router,...]

Prints a readable table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from ebbflow.demo import llm_inputs  # noqa: E402
from ebbflow.emulator.tokens import expected_text as expected_output  # noqa: E402
from ebbflow.actuator.leftovers import find_leftovers  # noqa: E402
from ebbflow.router.front import front_processes  # noqa: E402
from ebbflow.runtime.process import free_port  # noqa: E402

EBBFLOW = Path(sys.executable).parent / "ebbflow"
CONTROL_PLANE = ("collector", "forecaster", "scheduler", "actuator")
FAULTS = (*CONTROL_PLANE, "router", "front", "replica", "nats", "control-plane")
CONFIG = "actuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\nmodels:\n  llm:\n    min_replicas: 2\n    max_replicas: 2\n"
"""A fixed fleet of 2: any scale-down during a fault is one caused by missing data."""


class Up:
    """`ebbflow up` in a child process, its output collected line by line."""

    def __init__(self, state_dir: Path, config: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT / "services")
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.state_dir = state_dir
        self.process = subprocess.Popen(
            [str(EBBFLOW), "up", "--config", str(config), "--state-dir", str(state_dir), "--router-port", str(port), "--router-http-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_line(self, word: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if word in line:
                return line
        raise AssertionError(f"no line with {word!r}; output so far:\n{''.join(self.output)}")

    def stop(self, timeout_s: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"no exit {timeout_s:.0f} s after SIGTERM; output:\n{''.join(self.output)}") from None

    def cli(self, *args: str) -> str:
        return subprocess.run([str(EBBFLOW), *args, "--state-dir", str(self.state_dir)], capture_output=True, text=True, timeout=30).stdout

    def status(self) -> dict:
        return dict(json.loads(self.cli("status", "--json")))

    def model(self, name: str = "llm") -> dict:
        (found,) = [m for m in self.status()["models"] if m["name"] == name]
        return dict(found)

    def service(self, name: str) -> psutil.Process:
        """The `ebbflow serve NAME` process the supervisor runs now."""
        (found,) = [p for p in psutil.Process(self.process.pid).children() if p.cmdline()[3:5] == ["serve", name]]
        return found

    def descendants(self, name: str) -> list[psutil.Process]:
        """Processes under this `ebbflow up` and detached ones of its state directory, by executable name."""
        found = [p for p in psutil.Process(self.process.pid).children(recursive=True) if p.name() == name]
        marker = str(self.state_dir.resolve())
        for process in psutil.process_iter(["name", "cmdline"]):
            if process.info["name"] == name and process not in found and marker in " ".join(process.info["cmdline"] or []):
                found.append(process)
        return found

    def wait_back(self, service: str, restarts: int, timeout_s: float) -> float:
        """Seconds until the supervisor reports `service` running after its `restarts`-th restart, announced."""
        start = time.monotonic()
        while True:
            rows = {row["service"]: row for row in self.status()["services"]}
            row = rows.get(service)
            if row and row["state"] == "running" and row["restarts"] >= restarts and row["heartbeat_age_s"] is not None:
                return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise AssertionError(f"{service} not back after {timeout_s:.0f} s: {rows}")
            time.sleep(0.3)

    def restarts(self) -> dict[str, int]:
        return {row["service"]: row["restarts"] for row in self.status()["services"]}


class SteadyLoad:
    """`clients` threads sending unary requests back to back through the router, every answer checked."""

    def __init__(self, address: str, clients: int = 3) -> None:
        self.address = address
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, index: int) -> None:
        client = triton_grpc.InferenceServerClient(self.address)
        n = 0
        while not self._stop.is_set():
            prompt = f"chaos {index} {n}"
            n += 1
            try:
                result = client.infer("llm", llm_inputs(prompt, 4), client_timeout=30.0)
                ok = result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(prompt, 4)
                self.outcomes["ok" if ok else "wrong answer"] += 1
            except InferenceServerException as error:
                self.outcomes[str(error.status())] += 1
                self.errors.append(f"{time.strftime('%H:%M:%S')} {error.status()} {error.message()}")
            time.sleep(0.05)
        client.close()

    def start(self) -> "SteadyLoad":
        for thread in self._threads:
            thread.start()
        return self

    def snapshot(self) -> Counter[str]:
        return Counter(self.outcomes)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)


@dataclass
class Outcome:
    fault: str
    signal: str
    sent: int
    failed: dict[str, int]
    back_s: float
    desired: int
    ready: int
    new_replicas: int
    notes: list[str] = field(default_factory=list)


def inject(up: Up, load: SteadyLoad, fault: str, sig: str, stop_s: float) -> Outcome:
    """One fault under load; what it cost once the stack has settled again."""
    before, restarts = load.snapshot(), up.restarts()
    replicas_before = {r["id"] for r in up.model()["replicas"]}
    back_s = 0.0
    if fault in (*CONTROL_PLANE, "router", "control-plane"):
        names = CONTROL_PLANE if fault == "control-plane" else (fault,)
        victims = [up.service(name) for name in names]
        for victim in victims:
            victim.send_signal(signal.SIGKILL if sig == "SIGKILL" else signal.SIGSTOP)
        if sig == "SIGSTOP":
            time.sleep(stop_s)
            for victim in victims:
                victim.send_signal(signal.SIGCONT)
        back_s = max(up.wait_back(name, restarts[name] + (1 if sig == "SIGKILL" else 0), 90) for name in names)
    else:
        executable = {"front": "haproxy", "replica": "tritonserver", "nats": "nats-server"}[fault]
        victim = up.descendants(executable)[0]
        started = time.monotonic()
        victim.send_signal(signal.SIGKILL if sig == "SIGKILL" else signal.SIGSTOP)
        if sig == "SIGSTOP":
            time.sleep(stop_s)
            victim.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 90
        while True:  # back when the fleet is whole again
            model = up.model()
            if model["ready_replicas"] == model["desired_replicas"] == 2 and up.descendants(executable):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.3)
        back_s = time.monotonic() - started
    time.sleep(2.0)
    after, model = load.snapshot(), up.model()
    failed = {code: n - before.get(code, 0) for code, n in after.items() if code != "ok" and n - before.get(code, 0)}
    new = len({r["id"] for r in model["replicas"]} - replicas_before)
    return Outcome(fault, sig, sum(after.values()) - sum(before.values()), failed, round(back_s, 2), model["desired_replicas"], model["ready_replicas"], new)


def run(faults: tuple[str, ...], signals: tuple[str, ...], stop_s: float, work: Path) -> tuple[list[Outcome], list[str]]:
    """Start a stack, drive steady load, inject each fault with each signal; the outcomes and the processes left
    after the stack stopped."""
    config = work / "ebbflow.yaml"
    config.write_text(CONFIG)
    port = free_port()
    up = Up(work / "state", config, port)
    load: SteadyLoad | None = None
    outcomes: list[Outcome] = []
    watched: list[psutil.Process] = []
    try:
        up.wait_line("ebbflow ready", 120)
        deadline = time.monotonic() + 60
        while up.model()["ready_replicas"] < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        load = SteadyLoad(f"127.0.0.1:{port}").start()
        time.sleep(2)
        for fault in faults:
            for sig in signals:
                if fault == "control-plane" and sig == "SIGSTOP":
                    continue  # freezing all four is the same as freezing each, longer
                outcomes.append(inject(up, load, fault, sig, stop_s))
        watched = psutil.Process(up.process.pid).children(recursive=True)
        outcomes.append(stop_under_load(up, load))
    finally:
        if load is not None:
            load.stop()
        if up.process.poll() is None:
            watched = psutil.Process(up.process.pid).children(recursive=True)
            up.stop(120)
    left = [" ".join(p.cmdline()[:3]) for p in watched if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    # Replicas and the front are detached (their parent may have died in a fault): found by the state directory.
    left += [f"replica process {pid}" for pid in find_leftovers(up.state_dir)]
    left += [f"haproxy {pid}" for pid in front_processes(up.state_dir)]
    return outcomes, sorted(set(left))


NOT_ADMITTED = ("failed to connect", "connection refused", "connections to all backends failing")
"""Errors of calls that never reached the stack (its port closed): a stopping stack refuses those, as it should."""


def stop_under_load(up: Up, load: SteadyLoad) -> Outcome:
    """SIGTERM of `ebbflow up` while the load runs: every call it had admitted must still be answered; calls made
    after its port closed are refused (counted apart, not as failures)."""
    before, errors_before = load.snapshot(), len(load.errors)
    started = time.monotonic()
    code = up.stop(120)
    stop_s = time.monotonic() - started
    time.sleep(1.0)
    after = load.snapshot()
    new_errors = load.errors[errors_before:]
    refused = sum(1 for e in new_errors if any(p in e.lower() for p in NOT_ADMITTED))
    admitted_failures = [e for e in new_errors if not any(p in e.lower() for p in NOT_ADMITTED)]
    failed = Counter(e.split(" ", 2)[1] for e in admitted_failures)
    outcome = Outcome("ebbflow up", "SIGTERM", sum(after.values()) - sum(before.values()), dict(failed), round(stop_s, 2), 0, 0, 0)
    outcome.notes = [f"exit code {code}", f"{refused} call(s) refused after the port closed", *admitted_failures[:3]]
    return outcome


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'fault':<14} {'signal':<8} {'sent':>5} {'failed':>6} {'codes':<24} {'back_s':>6} {'desired':>7} {'ready':>5} {'new':>4}"]
    for o in outcomes:
        codes = ", ".join(f"{code} x{n}" for code, n in o.failed.items()) or "-"
        lines.append(f"{o.fault:<14} {o.signal:<8} {o.sent:>5} {sum(o.failed.values()):>6} {codes:<24} {o.back_s:>6} {o.desired:>7} {o.ready:>5} {o.new_replicas:>4}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stop-s", type=float, default=20.0, help="how long a SIGSTOPped process stays frozen (default: %(default)s)")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated, from: " + ", ".join(FAULTS))
    parser.add_argument("--signals", default="SIGKILL,SIGSTOP")
    args = parser.parse_args()
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}")
    with tempfile.TemporaryDirectory(prefix="ebbflow-chaos-") as work:
        outcomes, left = run(faults, tuple(args.signals.split(",")), args.stop_s, Path(work))
    print(table(outcomes))
    for o in outcomes:
        if o.notes:
            print(f"{o.fault} {o.signal}: " + "; ".join(o.notes))
    print(f"processes left after the stack stopped: {left or 'none'}")
    print(json.dumps({"stop_s": args.stop_s, "outcomes": [o.__dict__ for o in outcomes], "left": left}))
    return 0 if all(not o.failed for o in outcomes) and not left else 1


if __name__ == "__main__":
    sys.exit(main())
