"""Snapshot -> published decision latency of the scheduler, side by side: deciding on arrival vs on a 1 s tick.

A real nats-server; the real Scheduler (policies in KV, desired state by
compare-and-set, decisions appended to the DECISIONS stream) for --models
models. Each round publishes one model's LoadSnapshot whose in-flight load
needs a different replica count (2 <-> 6 replicas, a step the policy takes at
once) and times it until that decision arrives on the model's decisions
subject. Both modes run in one process, one after the other, on the same
models. Prints one JSON line, then a table.

    .venv/bin/python benchmarks/scheduler_scale.py [--models 50] [--rounds 200]
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

from ebbflow.runtime import subjects
from ebbflow.runtime.bus import connect
from ebbflow.runtime.config import ModelPolicy, SchedulerConfig
from ebbflow.runtime.nats_server import start_nats_server
from ebbflow.runtime.registry import RegistryView
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics, policy_to_proto
from ebbflow.v1 import load_pb2, scheduling_pb2


async def measure(nats_url: str, models: int, rounds: int, react: bool) -> list[float]:
    bus = await connect(nats_url, name=f"scheduler-bench-{react}")
    names = [f"m{i:04d}" for i in range(models)]
    for name in names:
        policy = ModelPolicy(model=name, min_replicas=1, max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=0, panic_threshold=0, forecast_quantile=0)
        await bus.policies.put(name, policy_to_proto(policy).SerializeToString())
    view, stop = RegistryView(), asyncio.Event()
    watcher = asyncio.create_task(view.run(bus, stop))
    await view.wait_loaded(30)
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
    await asyncio.gather(task, watcher, return_exceptions=True)
    await subscription.unsubscribe()
    for name in names:
        await bus.policies.delete(name)
        await bus.desired.delete(name)
    await bus.close()
    return latencies


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        nats, url = await start_nats_server(Path(tmp))
        try:
            results = {}
            for label, react in (("on arrival", True), ("1 s tick (baseline)", False)):
                latencies = await measure(url, args.models, args.rounds, react)
                results[label] = {"p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3), "rounds": len(latencies)}
        finally:
            await nats.stop(5.0)
    base = results["1 s tick (baseline)"]
    return {"benchmark": "scheduler_scale", "models": args.models, "results": results, "p99_ratio_to_baseline": results["on arrival"]["p99_ms"] / base["p99_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report))
    print(f"{'mode':<22} {'p50':>9} {'p99':>9}  ({args.models} models, snapshot published -> decision on the stream)")
    for label, r in report["results"].items():
        print(f"{label:<22} {r['p50_ms']:7.1f}ms {r['p99_ms']:7.1f}ms")
    print(f"p99 on arrival / tick baseline = {report['p99_ratio_to_baseline']:.3f}")


if __name__ == "__main__":
    main()
