"""Record a real tritonserver's /metrics text for the collector's tests and benchmark.

Starts one tritonserver with N emulated LLMs (copies of deploy/model-repository's
`llm`, renamed), sends each a few requests so every counter moves, and writes
the /metrics text. `--gpus N` appends Triton's GPU families (nv_gpu_* per
gpu_uuid, exactly as tritonserver prints them with --allow-gpu-metrics) for N
GPUs, marked by a comment line, since this machine has no GPU: the model and
host families stay exactly as captured.

    .venv/bin/python scripts/capture_triton_metrics.py --models 1 tests/data/triton_metrics_llm.txt
    .venv/bin/python scripts/capture_triton_metrics.py --models 4 --gpus 8 tests/data/triton_metrics_4models_8gpus.txt
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import tritonclient.grpc.aio as triton

from ebbflow.runtime.process import free_port, spawn
from ebbflow.runtime.triton import default_model_repository, find_triton, prepare_backend_dir, triton_launch

GPU_FAMILIES = (
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge"),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge"),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge"),
    ("nv_gpu_power_usage", "GPU power usage in watts", "gauge"),
    ("nv_gpu_power_limit", "GPU power management limit in watts", "gauge"),
    ("nv_energy_consumption", "GPU energy consumption in joules since the Triton Server started", "counter"),
)


def gpu_families(gpus: int, seed: int = 7) -> str:
    """Triton's per-GPU families for `gpus` 80 GB GPUs, in its output format."""
    rng = np.random.default_rng(seed)
    uuids = [f"GPU-{uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)))}" for _ in range(gpus)]
    values = {
        "nv_gpu_utilization": rng.uniform(0.2, 0.95, gpus),
        "nv_gpu_memory_total_bytes": np.full(gpus, 85899345920.0),
        "nv_gpu_memory_used_bytes": rng.uniform(2e10, 7.5e10, gpus).round(),
        "nv_gpu_power_usage": rng.uniform(90, 650, gpus).round(3),
        "nv_gpu_power_limit": np.full(gpus, 700.0),
        "nv_energy_consumption": rng.uniform(1e5, 1e7, gpus).round(3),
    }
    lines = [f"# GPU families for {gpus} GPUs in tritonserver's format (recorded on a host without GPUs)"]
    for name, help_text, kind in GPU_FAMILIES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{gpu_uuid="{u}"}} {v:.6f}' for u, v in zip(uuids, values[name])]
    return "\n".join(lines) + "\n"


def model_repository(target: Path, count: int) -> list[str]:
    source = default_model_repository() / "llm"
    names = ["llm"] + [f"llm_{i}" for i in range(2, count + 1)]
    for name in names:
        shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        config = target / name / "config.pbtxt"
        config.write_text(re.sub(r'^name: ".*"$', f'name: "{name}"', config.read_text(), count=1, flags=re.MULTILINE))
    return names


async def capture(models: int, gpus: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        names = model_repository(work / "repository", models)
        install = find_triton()
        grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
        launch = triton_launch(
            install, prepare_backend_dir(install, work), work / "repository", names, grpc_port, http_port, metrics_port, 3, "ebbflow_capture_",
            {"EBBFLOW_TIME_SCALE": "0.01"},
        )
        child = await spawn("tritonserver", launch.argv, work / "triton.log", launch.env)
        try:
            client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            for _ in range(300):
                if await child_ready(client, names):
                    break
                await asyncio.sleep(0.1)
            for index, name in enumerate(names):
                for request in range(3 + index):
                    text = triton.InferInput("text_input", [1, 1], "BYTES")
                    text.set_data_from_numpy(np.array([[b"the quick brown fox " * (request + 1)]], dtype=object))
                    tokens = triton.InferInput("max_tokens", [1, 1], "INT32")
                    tokens.set_data_from_numpy(np.array([[4 + request]], dtype=np.int32))
                    await client.infer(name, [text, tokens])
            await client.close()
            await asyncio.sleep(1.2)  # Triton refreshes some gauges every --metrics-interval-ms
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                    text_out = await response.text()
        finally:
            await child.stop(10)
    if gpus:
        text_out += gpu_families(gpus)
    out.write_text(text_out)
    print(f"wrote {out}: {len(text_out)} bytes, {text_out.count(chr(10))} lines")


async def child_ready(client: triton.InferenceServerClient, names: list[str]) -> bool:
    try:
        return all([await client.is_model_ready(name) for name in names])
    except Exception:  # not listening yet
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(capture(args.models, args.gpus, args.out))


if __name__ == "__main__":
    main()
