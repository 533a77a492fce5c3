"""`ebbflow demo` (what `make demo` runs): start the stack, drive a ramp of load, show it scale out and in.

The load is real: unchanged tritonclient calls through the router to real
tritonserver replicas. The timeline comes from `ebbflow status`'s own API.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput

from ebbflow import REPO_ROOT
from ebbflow.client import fetch_status
from ebbflow.emulator.tokens import expected_text

PROMPT = "the emulated model echoes these words back as its output tokens one per step"


def llm_inputs(prompt: str, max_tokens: int) -> list[InferInput]:
    text = InferInput("text_input", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
    tokens = InferInput("max_tokens", [1, 1], "INT32")
    tokens.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
    return [text, tokens]


def clients_at(t_s: float, duration_s: float, peak: int) -> int:
    """The ramp: quiet, peak from 15 % to 50 % of the run, quiet again."""
    return peak if 0.15 * duration_s <= t_s < 0.5 * duration_s else 2


class Load:
    def __init__(self, address: str) -> None:
        self.address = address
        self.ok = 0
        self.failed = 0
        self.wrong = 0
        self.last_error = ""

    async def client(self, index: int, active: Callable[[int], bool]) -> None:
        client = triton_aio.InferenceServerClient(self.address)
        expected = expected_text(PROMPT, 64)
        try:
            while True:
                if not active(index):
                    await asyncio.sleep(0.2)
                    continue
                try:
                    result = await client.infer("llm", llm_inputs(PROMPT, 64))
                    text = result.as_numpy("text_output").reshape(-1)[0].decode()
                    if text == expected:
                        self.ok += 1
                    else:
                        self.wrong += 1
                except Exception as error:  # counted and shown, the demo goes on
                    self.failed += 1
                    self.last_error = str(error)[:120]
                    await asyncio.sleep(0.2)
        finally:
            await client.close()


async def drive(address: str, state_dir: Path, duration_s: float, peak: int) -> tuple[int, int, Load]:
    load = Load(address)
    start = time.monotonic()
    active = lambda i: i < clients_at(time.monotonic() - start, duration_s, peak)  # noqa: E731
    tasks = [asyncio.create_task(load.client(i, active)) for i in range(peak)]
    max_ready = 0
    print(f"{'t(s)':>5} {'clients':>7} {'in_flight':>9} {'arrival/s':>9} {'desired':>7} {'ready':>5} {'ok':>6} {'failed':>6}  last decision")
    try:
        while (t := time.monotonic() - start) < duration_s:
            status = await asyncio.to_thread(fetch_status, state_dir, "llm")
            model = status.models[0]
            max_ready = max(max_ready, model.ready_replicas)
            print(
                f"{t:>5.0f} {clients_at(t, duration_s, peak):>7} {model.in_flight:>9.1f} {model.arrival_rps:>9.1f} "
                f"{model.desired_replicas:>7} {model.ready_replicas:>5} {load.ok:>6} {load.failed + load.wrong:>6}  {model.last_decision_reason[:70]}",
                flush=True,
            )
            await asyncio.sleep(3.0)
        final = (await asyncio.to_thread(fetch_status, state_dir, "llm")).models[0].ready_replicas
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return max_ready, final, load


def run(args: argparse.Namespace) -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="ebbflow-demo-"))
    ebbflow = [sys.executable, "-m", "ebbflow.cli"]
    command = [*ebbflow, "up", "--config", str(REPO_ROOT / "deploy" / "demo.yaml"), "--state-dir", str(state_dir), "--router-port", "0"]
    print(f"$ ebbflow up --config deploy/demo.yaml --state-dir {state_dir} --router-port 0", flush=True)
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready_address: list[str] = []
    ready = threading.Event()

    def echo() -> None:
        assert up.stdout is not None
        for line in up.stdout:
            print(f"  [up] {line}", end="", flush=True)
            if "ebbflow ready" in line:
                ready_address.append(line.split("can use ")[1].split()[0])
                ready.set()
        ready.set()

    threading.Thread(target=echo, daemon=True).start()
    try:
        if not ready.wait(120) or not ready_address:
            print("ebbflow up did not become ready; see the lines above", file=sys.stderr)
            return 1
        print(f"driving load through the router at {ready_address[0]}: 2 clients, then {args.peak_clients}, then 2", flush=True)
        max_ready, final_ready, load = asyncio.run(drive(ready_address[0], state_dir, args.duration_s, args.peak_clients))
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(40)
            except subprocess.TimeoutExpired:
                up.kill()
    scaled = max_ready > 1 and final_ready < max_ready
    print()
    print(f"requests: {load.ok} ok, {load.failed} failed, {load.wrong} wrong output" + (f" (last error: {load.last_error})" if load.failed else ""))
    print(f"replicas: 1 -> {max_ready} at peak -> {final_ready} at the end: " + ("scaled out and back in" if scaled else "did NOT scale as expected"))
    print(f"logs kept in {state_dir / 'logs'}")
    return 0 if scaled and load.wrong == 0 else 1

