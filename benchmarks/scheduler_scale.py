"""The scheduler at scale: snapshot -> decision latency, and GPU placement of 1,000 models onto 10,000 GPUs.

Latency, side by side: deciding on arrival vs on a 1 s tick.

A real nats-server; the real Scheduler (policies in KV, desired state by
compare-and-set, decisions appended to the DECISIONS stream) for --models
models. Each round publishes one model's LoadSnapshot whose in-flight load
needs a different replica count (2 <-> 6 replicas, a step the policy takes at
once) and times it until that decision arrives on the model's decisions
subject. Both modes run in one process, one after the other, on the same
models.

Placement (the pure core, placement.py): --placement-models models
(1-16 replicas, 12-70 GB each, sizes that do not divide 80 GB, seeded) onto --gpus 80 GB GPUs, 8 per node;
then again after every model's replica count moved by up to 20 %, keeping the
running replicas. Reported: time, GPUs used against the fractional lower
bound (sum of memory / GPU memory), models with 2+ replicas on 2+ nodes,
moves, unplaced replicas.

Live (--live-rounds > 0): the whole embedded stack (real nats-server, real
tritonserver replicas, router, collector, scheduler, actuator); 2 closed-loop
tritonclient clients through the router, then a x5 step to 10. Timed: the
step until the scale-up decision is on the DECISIONS stream. Side by side in
the same run: panic reading the routers' in-flight push vs the collector's
snapshots only.
Between rounds the load goes back to 2 clients and the model back to 1
replica.

Prints one JSON line, then a table.

    .venv/bin/python benchmarks/scheduler_scale.py [--models 50] [--rounds 200] [--placement-models 1000] [--gpus 10000] [--live-rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from ebbflow.policy import ModelPolicy, policy_to_proto
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import connect
from ebbflow.runtime.config import SchedulerConfig
from ebbflow.runtime.nats_server import start_nats_server
from ebbflow.runtime.registry import following
from ebbflow.placement import Node, Want, place
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
from ebbflow.v1 import load_pb2, scheduling_pb2


async def measure(nats_url: str, models: int, rounds: int, react: bool) -> list[float]:
    bus = await connect(nats_url, name=f"scheduler-bench-{react}")
    names = [f"m{i:04d}" for i in range(models)]
    for name in names:
        policy = ModelPolicy(model=name, min_replicas=1, max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=0, panic_threshold=0, forecast_quantile=0)
        await bus.policies.put(name, policy_to_proto(policy).SerializeToString())
    async with following(bus) as view:
        stop = asyncio.Event()
        while len(view.policies) < models:
            await asyncio.sleep(0.05)
        scheduler = Scheduler(SchedulerConfig(interval_s=1.0, react_to_snapshots=react), bus, view, SchedulerMetrics(CollectorRegistry()))
        arrived: dict[str, asyncio.Future] = {}

        async def on_decision(msg) -> None:  # type: ignore[no-untyped-def]
            decision = scheduling_pb2.ScalingDecision.FromString(msg.data)
            future = arrived.get(decision.model)
            if future is not None and not future.done() and decision.desired.horizontal.replicas == future.want:  # type: ignore[attr-defined]
                future.set_result(time.perf_counter())

        subscription = await bus.nc.subscribe(f"{subjects.DECISIONS}.*", cb=on_decision)
        task = asyncio.create_task(scheduler.run(stop))
        # Settle: every model at 2 replicas.
        for name in names:
            await bus.nc.publish(subjects.load_subject(name), load_pb2.LoadSnapshot(model=name, status=load_pb2.DATA_STATUS_FRESH, in_flight=8.0).SerializeToString())
        await asyncio.sleep(3.0)
        latencies, rng = [], np.random.default_rng(1)
        level = {name: 2 for name in names}
        for _ in range(rounds):
            name = names[int(rng.integers(0, models))]
            level[name] = 6 if level[name] == 2 else 2
            future = asyncio.get_running_loop().create_future()
            future.want = level[name]  # type: ignore[attr-defined]
            arrived[name] = future
            snapshot = load_pb2.LoadSnapshot(model=name, status=load_pb2.DATA_STATUS_FRESH, in_flight=4.0 * level[name])
            started = time.perf_counter()
            await bus.nc.publish(subjects.load_subject(name), snapshot.SerializeToString())
            latencies.append(await asyncio.wait_for(future, 10) - started)
            # Keep every other model's load fresh, as the collector would.
            await asyncio.sleep(float(rng.uniform(0.0, 0.05)))
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await subscription.unsubscribe()
    for name in names:
        await bus.policies.delete(name)
        await bus.desired.delete(name)
    await bus.close()
    return latencies


def placement(models: int, gpus: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    nodes = [Node(f"node{i:05d}", 8, 80.0) for i in range(gpus // 8)]
    wants = [
        Want(f"m{i:04d}", int(rng.integers(1, 17)), float(rng.choice([12.0, 18.0, 24.0, 30.0, 45.0, 70.0])), int(rng.integers(0, 3)))
        for i in range(models)
    ]
    started = time.perf_counter()
    first = place(nodes, wants)
    first_s = time.perf_counter() - started
    moved = [Want(w.model, max(1, round(w.replicas * float(rng.uniform(0.8, 1.2)))), w.memory_gb, w.priority) for w in wants]
    started = time.perf_counter()
    second = place(nodes, moved, current=first.slots)
    second_s = time.perf_counter() - started

    def spread(plan, group) -> float:  # type: ignore[no-untyped-def]
        multi = [w for w in group if w.replicas >= 2 and len(plan.replicas_of(w.model)) >= 2]
        return sum(1 for w in multi if len({g[0] for g in plan.replicas_of(w.model)}) >= 2) / max(1, len(multi))

    kept = sum(1 for key, gpu in second.slots.items() if first.slots.get(key) == gpu)
    return {
        "replicas": sum(w.replicas for w in wants),
        "first_s": first_s,
        "gpus_used": first.gpus_used,
        "lower_bound": first.lower_bound,
        "packing_efficiency": first.lower_bound / max(1, first.gpus_used),
        "spread": spread(first, wants),
        "unplaced": sum(c for c, _ in first.unplaced.values()),
        "replace_s": second_s,
        "replace_kept": kept,
        "replace_moves": second.moves,
        "replace_gpus_used": second.gpus_used,
        "replace_lower_bound": second.lower_bound,
    }


async def live_step(push: bool, rounds: int, state_dir: Path, nats_url: str) -> list[float]:
    """Seconds from a x5 step in closed-loop clients to the scale-up decision, through the whole stack."""
    from dataclasses import replace

    import tritonclient.grpc.aio as triton_aio

    from ebbflow.demo import PROMPT, llm_inputs
    from ebbflow.runtime.config import ActuatorConfig, Config, RouterConfig
    from ebbflow.stack import Stack

    # Short delay and panic hold, so that each round starts again from one replica within seconds.
    policy = ModelPolicy(
        model="llm", min_replicas=1, max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=3, panic_hold_s=3, forecast_quantile=0
    )
    config = replace(
        Config(),
        router=RouterConfig(port=0, http_port=-1),
        scheduler=SchedulerConfig(interval_s=1.0, router_push=push),
        actuator=ActuatorConfig(time_scale=0.05, drain_propagation_s=0.3, exit_timeout_s=3),
        models=(policy,),
    )
    stack = Stack(config, nats_url, state_dir)
    await stack.start()
    await stack.wait_serving(["llm"], timeout_s=60)
    active = {"clients": 2}
    stop = asyncio.Event()

    async def client(index: int) -> None:
        triton = triton_aio.InferenceServerClient(stack.addresses.router)
        try:
            while not stop.is_set():
                if index >= active["clients"]:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    await triton.infer("llm", llm_inputs(PROMPT, 32))
                except Exception:  # counted by the router; a benchmark client just goes on
                    await asyncio.sleep(0.05)
        finally:
            await triton.close()

    scale_up = asyncio.Event()

    async def on_decision(msg) -> None:  # type: ignore[no-untyped-def]
        decision = scheduling_pb2.ScalingDecision.FromString(msg.data)
        if decision.desired.horizontal.replicas > decision.previous_replicas:
            scale_up.set()

    async def desired() -> int:
        return scheduling_pb2.DesiredState.FromString((await stack.bus.desired.get("llm")).value).horizontal.replicas

    tasks = [asyncio.create_task(client(i)) for i in range(10)]
    subscription = await stack.bus.nc.subscribe(subjects.decision_subject("llm"), cb=on_decision)
    latencies = []
    try:
        for _ in range(rounds):
            active["clients"] = 2
            deadline = time.monotonic() + 60
            while (await desired() != 1 or len(stack.view.ready("llm")) != 1) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(3.0)  # the quiet load in the collector's windows
            scale_up.clear()
            started = time.monotonic()
            active["clients"] = 10
            await asyncio.wait_for(scale_up.wait(), 30)
            latencies.append(time.monotonic() - started)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await subscription.unsubscribe()
        await stack.stop()
    return latencies


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        nats, url = await start_nats_server(Path(tmp))
        try:
            results = {}
            for label, react in (("on arrival", True), ("1 s tick (baseline)", False)):
                latencies = await measure(url, args.models, args.rounds, react)
                results[label] = {"p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3), "rounds": len(latencies)}
            live = {}
            for label, push in (("router push", True), ("snapshots only (baseline)", False)):
                if args.live_rounds:
                    steps = await live_step(push, args.live_rounds, Path(tmp) / f"live-{push}", url)
                    live[label] = {"median_s": float(np.median(steps)), "max_s": float(np.max(steps)), "rounds": len(steps)}
        finally:
            await nats.stop(5.0)
    base = results["1 s tick (baseline)"]
    return {
        "benchmark": "scheduler_scale",
        "models": args.models,
        "results": results,
        "p99_ratio_to_baseline": results["on arrival"]["p99_ms"] / base["p99_ms"],
        "placement": placement(args.placement_models, args.gpus),
        "live_step": live,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--placement-models", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=10000)
    parser.add_argument("--live-rounds", type=int, default=5, help="x5 steps through the whole stack per mode (0: skip)")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report))
    print(f"{'mode':<22} {'p50':>9} {'p99':>9}  ({args.models} models, snapshot published -> decision on the stream)")
    for label, r in report["results"].items():
        print(f"{label:<22} {r['p50_ms']:7.1f}ms {r['p99_ms']:7.1f}ms")
    print(f"p99 on arrival / tick baseline = {report['p99_ratio_to_baseline']:.3f}")
    p = report["placement"]
    print(
        f"placement of {args.placement_models} models ({p['replicas']} replicas) on {args.gpus} GPUs: {p['first_s'] * 1e3:.0f} ms, "
        f"{p['gpus_used']} GPUs vs lower bound {p['lower_bound']} (efficiency {p['packing_efficiency']:.3f}), "
        f"{p['spread']:.1%} of multi-replica models on 2+ nodes, {p['unplaced']} unplaced"
    )
    print(
        f"re-placement after +-20 % replicas: {p['replace_s'] * 1e3:.0f} ms, {p['replace_kept']} replicas kept in place, {p['replace_moves']} moved, "
        f"{p['replace_gpus_used']} GPUs vs lower bound {p['replace_lower_bound']}"
    )
    for label, r in report["live_step"].items():
        print(f"live x5 step -> scale-up decision, {label:<26} median {r['median_s']:.2f} s, max {r['max_s']:.2f} s ({r['rounds']} rounds)")


if __name__ == "__main__":
    main()
