"""What the control plane costs at rest: `ebbflow up` (one process per service) against the same five services
composed in one process (stack.py:Stack, how the control plane ran before it was split), side by side.

For each: seconds from start until the router answers an inference, then, idle for --idle-s, each process's
memory (RSS; PSS, which splits shared pages fairly between the processes sharing them) and CPU. Replicas,
HAProxy and nats-server are listed but left out of the control plane's totals (both forms run the same ones).

    .venv/bin/python benchmarks/stack_footprint.py [--idle-s 10]

Prints a readable table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import tritonclient.grpc as triton_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from ebbflow.demo import llm_inputs  # noqa: E402
from ebbflow.runtime.process import free_port  # noqa: E402

EBBFLOW = Path(sys.executable).parent / "ebbflow"
CONFIG = "actuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\nmodels:\n  llm:\n    min_replicas: 1\n    max_replicas: 1\n"
DATA_PLANE = ("tritonserver", "triton_python_backend_stub", "haproxy", "nats-server")


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT / "services")
    return env


def start_separate(work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(EBBFLOW), "up", "--config", str(work / "ebbflow.yaml"), "--state-dir", str(work / "state"), "--router-port", str(port), "--router-http-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_environment(),
    )


def start_in_process(work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--in-process-child", str(work), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_environment()
    )


async def _in_process_child(work: Path, port: int) -> None:
    """The five services in this one process, with a nats-server, until SIGTERM."""
    from ebbflow.runtime.config import load_config, with_router_port
    from ebbflow.runtime.nats_server import NatsSupervisor
    from ebbflow.stack import Stack

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    state = work / "state"
    nats = NatsSupervisor(state)
    url = await nats.start()
    stack = Stack(with_router_port(load_config(work / "ebbflow.yaml"), port), url, state)
    try:
        await stack.start()
        await stop.wait()
    finally:
        await stack.stop()
        await nats.stop()


def wait_serving(address: str, process: subprocess.Popen[bytes], timeout_s: float = 180.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before serving")
        try:
            client = triton_grpc.InferenceServerClient(address)
            client.infer("llm", llm_inputs("footprint", 2), client_timeout=5.0)
            client.close()
            return time.monotonic() - start
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"not serving after {timeout_s:.0f} s")


def measure(root: psutil.Process, idle_s: float) -> list[dict[str, object]]:
    processes = [root, *root.children(recursive=True)]
    for process in processes:
        process.cpu_percent(None)
    time.sleep(idle_s)
    rows = []
    for process in processes:
        try:
            memory = process.memory_full_info()
            name = process.name()
            cmdline = process.cmdline()
            what = " ".join(cmdline[3:5]) if cmdline[3:4] == ["serve"] else (name if name in DATA_PLANE else "main")
            rows.append({"process": what, "pid": process.pid, "rss_mb": round(memory.rss / 2**20, 1), "pss_mb": round(memory.pss / 2**20, 1),
                         "cpu_percent": round(process.cpu_percent(None), 1), "control_plane": name not in DATA_PLANE})
        except psutil.Error:
            continue
    return rows


def run_form(form: str, idle_s: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"ebbflow-footprint-{form}-") as tmp:
        work = Path(tmp)
        (work / "ebbflow.yaml").write_text(CONFIG)
        port = free_port()
        started = time.monotonic()
        process = (start_separate if form == "separate" else start_in_process)(work, port)
        try:
            ready_s = wait_serving(f"127.0.0.1:{port}", process)
            ready_s = time.monotonic() - started
            rows = measure(psutil.Process(process.pid), idle_s)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    control = [r for r in rows if r["control_plane"]]
    return {
        "form": form,
        "ready_s": round(ready_s, 2),
        "control_rss_mb": round(sum(float(r["rss_mb"]) for r in control), 1),  # type: ignore[arg-type]
        "control_pss_mb": round(sum(float(r["pss_mb"]) for r in control), 1),  # type: ignore[arg-type]
        "control_cpu_percent": round(sum(float(r["cpu_percent"]) for r in control), 1),  # type: ignore[arg-type]
        "processes": rows,
    }


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--in-process-child":
        asyncio.run(_in_process_child(Path(sys.argv[2]), int(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle time the CPU is measured over (default: %(default)s)")
    args = parser.parse_args()
    baseline = run_form("in-process", args.idle_s)
    separate = run_form("separate", args.idle_s)
    for result in (baseline, separate):
        print(f"\n{result['form']}: serving {result['ready_s']} s after start")
        print(f"  {'process':<22} {'RSS MB':>7} {'PSS MB':>7} {'CPU %':>6}")
        for row in result["processes"]:  # type: ignore[attr-defined]
            print(f"  {row['process']:<22} {row['rss_mb']:>7} {row['pss_mb']:>7} {row['cpu_percent']:>6}")
        print(f"  {'control plane':<22} {result['control_rss_mb']:>7} {result['control_pss_mb']:>7} {result['control_cpu_percent']:>6}")
    ratios = {
        key: round(float(separate[key]) / float(baseline[key]), 2) if float(baseline[key]) else None  # type: ignore[arg-type]
        for key in ("ready_s", "control_rss_mb", "control_pss_mb", "control_cpu_percent")
    }
    print("\nseparate / in-process: " + ", ".join(f"{k} x{v}" for k, v in ratios.items()))
    print(json.dumps({"baseline": baseline, "separate": separate, "ratio": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
