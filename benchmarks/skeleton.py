"""Walking-skeleton measurements, side by side in one run.

1. Latency of the same request sent directly to a replica and through the
   router, interleaved so machine noise hits both alike (ratio = router/direct).
2. Cold start of a replica (start command to Triton model ready).
3. Time from a load step to the scale-out decision, to the new replica being
   ready, and to it serving its first request.

Prints one JSON line, then a readable table. Needs no traces.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # before grpc is imported: replicas are forked while gRPC runs

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import tritonclient.grpc as triton_grpc  # noqa: E402
import tritonclient.grpc.aio as triton_aio  # noqa: E402

from ebbflow.policy import ModelPolicy  # noqa: E402
from ebbflow.runtime.config import ActuatorConfig, Config, RouterConfig  # noqa: E402
from ebbflow.runtime.nats_server import start_nats_server  # noqa: E402
from ebbflow.stack import Stack  # noqa: E402
from ebbflow.demo import llm_inputs  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure_overhead(stack: Stack, requests: int) -> dict[str, float]:
    (replica,) = stack.view.ready("llm")
    direct = triton_aio.InferenceServerClient(f"{replica.host}:{replica.grpc_port}")
    routed = triton_aio.InferenceServerClient(stack.addresses.router)
    samples: dict[str, list[float]] = {"direct": [], "router": []}
    inputs = llm_inputs("hi", 1)
    for _ in range(50):  # warm both paths
        await direct.infer("llm", inputs)
        await routed.infer("llm", inputs)
    for _ in range(requests):
        for name, client in (("direct", direct), ("router", routed)):
            start = time.perf_counter()
            await client.infer("llm", inputs)
            samples[name].append((time.perf_counter() - start) * 1e3)
    await direct.close()
    await routed.close()
    result = {}
    for name, values in samples.items():
        result[f"{name}_p50_ms"] = statistics.median(values)
        result[f"{name}_p99_ms"] = percentile(values, 0.99)
    result["added_p50_ms"] = result["router_p50_ms"] - result["direct_p50_ms"]
    result["added_p99_ms"] = result["router_p99_ms"] - result["direct_p99_ms"]
    result["ratio_p50"] = result["router_p50_ms"] / result["direct_p50_ms"]
    return result


async def measure_step(stack: Stack, clients: int) -> dict[str, float]:
    stop = asyncio.Event()

    async def client_loop() -> None:
        client = triton_aio.InferenceServerClient(stack.addresses.router)
        while not stop.is_set():
            await client.infer("llm", llm_inputs("a b c d", 32))
        await client.close()

    before = {r.replica_id for r in stack.view.ready("llm")}
    initial_generation = (await stack.bus.desired.get("llm")).revision
    step = time.monotonic()
    tasks = [asyncio.create_task(client_loop()) for _ in range(clients)]
    decided = ready = serving = None
    new_id = None
    while serving is None and time.monotonic() - step < 120:
        now = time.monotonic() - step
        if decided is None and (await stack.bus.desired.get("llm")).revision > initial_generation:
            decided = now
        fresh = [r for r in stack.view.ready("llm") if r.replica_id not in before]
        if ready is None and fresh:
            ready, new_id = now, fresh[0].replica_id
            replica = fresh[0]
        if new_id is not None:
            stats = triton_grpc.InferenceServerClient(f"{replica.host}:{replica.grpc_port}").get_inference_statistics("llm", as_json=True)
            if int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0)) > 0:
                serving = now
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    return {"step_to_decision_s": decided or -1, "step_to_replica_ready_s": ready or -1, "step_to_replica_serving_s": serving or -1}


async def main(args: argparse.Namespace) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="ebbflow-bench-"))
    nats_child, url = await start_nats_server(state)
    results: dict[str, float] = {}
    try:
        # Tiny service time so the router's own cost is visible.
        fast = replace(
            Config(),
            router=RouterConfig(port=0, http_port=-1),
            actuator=ActuatorConfig(time_scale=0.001, exit_timeout_s=2),
            models=(ModelPolicy(model="llm", min_replicas=1, max_replicas=1),),
        )
        stack = Stack(fast, url, state / "overhead")
        await stack.start()
        await stack.wait_serving(["llm"], 60)
        results.update(await measure_overhead(stack, args.requests))
        await stack.stop()

        # Realistic physics at 1/10 time: a 30 s model load takes 3 s.
        scaled = replace(
            Config(),
            router=RouterConfig(port=0, http_port=-1),
            actuator=ActuatorConfig(time_scale=args.time_scale, exit_timeout_s=2),
            models=(ModelPolicy(model="llm", min_replicas=1, max_replicas=2, target_in_flight_per_replica=2, scale_down_delay_s=60),),
        )
        stack = Stack(scaled, url, state / "step")
        await stack.start()
        started = time.monotonic()
        await stack.wait_serving(["llm"], 60)
        results["first_replica_cold_start_s"] = time.monotonic() - started
        results["model_load_s_scaled"] = 30.0 * args.time_scale
        results.update(await measure_step(stack, clients=6))
        await stack.stop()
    finally:
        await nats_child.stop(5)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per path")
    parser.add_argument("--time-scale", type=float, default=0.1)
    results = asyncio.run(main(parser.parse_args()))
    print(json.dumps({"benchmark": "skeleton", **{k: round(v, 4) for k, v in results.items()}}))
    print()
    print(f"{'measure':<32} {'value':>10}")
    for key, value in results.items():
        print(f"{key:<32} {value:>10.3f}")
