"""Scale write to pod Ready on a real Kubernetes control plane, beside the same tritonservers started bare.

The control plane is tests/kube/cluster.py (etcd, kube-apiserver, controller-manager, scheduler built by
`make kube`), its nodes the loopback kubelet's (tests/kube/kubelet.py: one tritonserver per pod, Ready from the
model-ready endpoint, probed every 0.2 s). For +1 (0 -> 1) and +4 (1 -> 5) replicas it times a write to the
Deployment's scale subresource until that many pods are Ready (polled every 50 ms through the API), and beside it,
as the baseline, the same number of tritonservers started bare on loopback until each reports the model ready
(what the kubelet runs, without Kubernetes). The difference is what the control plane's path costs: Deployment ->
ReplicaSet -> pod -> scheduler -> kubelet -> status. Also reports how long the control plane took to be ready.

Prints one JSON line, then a readable table.

    .venv/bin/python benchmarks/kube_scale.py [--rounds 3] [--model llm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

from ebbflow.kube.client import ConflictError  # noqa: E402
from ebbflow.runtime.process import spawn  # noqa: E402
from ebbflow.runtime.triton import default_model_repository, find_triton, prepare_backend_dir, remove_shm_regions, shm_prefix, triton_launch  # noqa: E402
from tests.kube.workloads import NAMESPACE, SCALE_PATH, SELECTOR, is_ready, triton_deployment  # noqa: E402
from tests.kube.cluster import KubeCluster, find_binaries  # noqa: E402
from tests.kube.kubelet import LoopbackKubelet, allocate_address, _ADDRESSES_IN_USE  # noqa: E402


async def bare_start(count: int, model: str, root: Path) -> float:
    """Seconds from starting `count` tritonservers at once to all of them reporting the model ready."""
    install = find_triton()
    backend = prepare_backend_dir(install, root)
    started = time.monotonic()
    children, urls, prefixes, addresses = [], [], [], []
    for index in range(count):
        address = allocate_address()
        prefix = shm_prefix(f"bare{index}{int(started) % 1000}")
        launch = triton_launch(install, backend, default_model_repository(), [model], 8001, 8000, 8002, 3, prefix, {"EBBFLOW_TIME_SCALE": "0.02"})
        argv = [*launch.argv, f"--http-address={address}", f"--grpc-address={address}", f"--metrics-address={address}"]
        children.append(await spawn(f"tritonserver {index}", argv, root / "logs" / f"bare-{index}.log", launch.env, own_group=True))
        urls.append(f"http://{address}:8000/v2/models/{model}/ready")
        prefixes.append(prefix)
        addresses.append(address)
    pending = set(urls)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
        while pending:
            for url in list(pending):
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            pending.discard(url)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
            if any(not child.running for child in children):
                raise RuntimeError(f"a bare tritonserver exited:\n{children[0].tail()}")
            await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    for child in children:
        await child.stop(5.0)
        child.kill_group()
    for prefix in prefixes:
        remove_shm_regions(prefix)
    for address in addresses:
        _ADDRESSES_IN_USE.discard(address)
    return elapsed


async def kube_step(client, replicas: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the scale write to `replicas` Ready pods."""
    started = time.monotonic()
    await write_scale(client, replicas)
    while True:
        pods = (await client.get(f"/api/v1/namespaces/{NAMESPACE}/pods", SELECTOR))["items"]
        if sum(1 for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")) >= replicas:
            return time.monotonic() - started
        await asyncio.sleep(0.05)


async def write_scale(client, replicas: int) -> None:  # type: ignore[no-untyped-def]
    """From a fresh read, again after a conflict (the controllers write the Deployment's status meanwhile)."""
    while True:
        scale = await client.get(SCALE_PATH)
        scale["spec"]["replicas"] = replicas
        try:
            await client.replace(SCALE_PATH, scale)
            return
        except ConflictError:
            continue


async def scale_to_zero(client, kubelet: LoopbackKubelet) -> None:  # type: ignore[no-untyped-def]
    await write_scale(client, 0)
    while (await client.get(f"/api/v1/namespaces/{NAMESPACE}/pods", SELECTOR))["items"] or kubelet.runs:
        await asyncio.sleep(0.1)


async def main(rounds: int, model: str) -> dict:
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("no Kubernetes control plane built: run `make kube` first")
    with tempfile.TemporaryDirectory(prefix="kube-bench-") as tmp:
        root = Path(tmp)
        cluster = KubeCluster(root / "cluster", binaries)
        results: dict = {"benchmark": "kube_scale", "model": model, "rounds": rounds}
        try:
            await cluster.start()
            results["control_plane_ready_s"] = round(cluster.ready_s, 2)
            client = cluster.client()
            kubelet = LoopbackKubelet(client, root / "kubelet", {"gpu-node-a": 3, "gpu-node-b": 2})
            await kubelet.start()
            await client.create(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", triton_deployment(model))
            times: dict[str, list[float]] = {"kube +1": [], "kube +4": [], "bare 1": [], "bare 4": []}
            for _ in range(rounds):
                times["kube +1"].append(await kube_step(client, 1))
                times["kube +4"].append(await kube_step(client, 5))
                await scale_to_zero(client, kubelet)
                times["bare 1"].append(await bare_start(1, model, root / "bare"))
                times["bare 4"].append(await bare_start(4, model, root / "bare"))
            results["median_s"] = {k: round(statistics.median(v), 2) for k, v in times.items()}
            results["all_s"] = {k: [round(x, 2) for x in v] for k, v in times.items()}
            await kubelet.stop()
            await client.close()
        finally:
            await cluster.stop()
    return results


def table(results: dict) -> str:
    m = results["median_s"]
    lines = [
        f"control plane ready: {results['control_plane_ready_s']:.1f} s (etcd start to scheduler and controller-manager holding their leases)",
        f"median of {results['rounds']} rounds, model {results['model']}:",
        "step   scale write -> pods Ready   bare tritonserver start -> ready   Kubernetes path adds",
        f"+1     {m['kube +1']:>8.2f} s                 {m['bare 1']:>8.2f} s                        {m['kube +1'] - m['bare 1']:>6.2f} s",
        f"+4     {m['kube +4']:>8.2f} s                 {m['bare 4']:>8.2f} s                        {m['kube +4'] - m['bare 4']:>6.2f} s",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="llm")
    args = parser.parse_args()
    outcome = asyncio.run(main(args.rounds, args.model))
    print(json.dumps(outcome))
    print(table(outcome))
