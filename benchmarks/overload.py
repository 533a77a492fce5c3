"""Overload at 3x what a model's max replicas serve, with shedding and without it, side by side in one run.

One emulated `llm` replica is the model's whole fleet (max_replicas 1). First
its capacity is measured: a closed loop at `--limit` requests in flight gives
the throughput X and the latency the replica keeps at that depth; the SLO is
`--slo-factor` times that p99. Then open-loop Poisson arrivals at
`--overload` x X for `--seconds`, the same seeded schedule for every target,
through the Python router and through the HAProxy front, each with
`shed_in_flight_per_replica: --limit` and with shedding off (0). A request
counts as good when it is answered within the SLO; the client gives up after
`--give-up-factor` x the SLO (DEADLINE_EXCEEDED), as a user would.

Prints one JSON line, then a table: admitted p50/p99 latency, the share
within the SLO, goodput (good answers per second) and the share refused.

    .venv/bin/python benchmarks/overload.py [--seconds 20] [--overload 3] [--limit 4]
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # before grpc is imported: replicas are forked while gRPC runs

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import grpc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_overhead import closed_loop, llm_request, percentile, put_policy, start_front  # noqa: E402

from ebbflow.actuator.static import StaticReplicas  # noqa: E402
from ebbflow.router.front import haproxy_binary  # noqa: E402
from ebbflow.router.worker import RouterWorkers  # noqa: E402
from ebbflow.runtime.bus import connect  # noqa: E402
from ebbflow.runtime.config import RouterConfig  # noqa: E402
from ebbflow.runtime.nats_server import start_nats_server  # noqa: E402
from ebbflow.runtime.process import free_port  # noqa: E402

INFER = "/inference.GRPCInferenceService/ModelInfer"


async def open_loop(address: str, payload: bytes, arrivals: list[float], give_up_s: float) -> list[tuple[str, float]]:
    """Send at the scheduled offsets (seconds from now), never waiting for answers; (outcome, latency s) of each."""
    channel = grpc.aio.insecure_channel(address)
    call = channel.unary_unary(INFER)
    outcomes: list[tuple[str, float]] = []

    async def one(at: float) -> None:
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
        sent = time.perf_counter()
        try:
            await call(payload, timeout=give_up_s)
            outcomes.append(("ok", time.perf_counter() - sent))
        except grpc.aio.AioRpcError as error:
            outcomes.append((error.code().name, time.perf_counter() - sent))

    start = time.perf_counter()
    await asyncio.gather(*(one(at) for at in arrivals))
    await channel.close()
    return outcomes


def score(outcomes: list[tuple[str, float]], slo_s: float, seconds: float) -> dict[str, float]:
    admitted = [latency for outcome, latency in outcomes if outcome == "ok"]
    refused = [latency for outcome, latency in outcomes if outcome == "RESOURCE_EXHAUSTED"]
    return {
        "sent": len(outcomes),
        "admitted_p50_s": percentile(admitted, 0.5),
        "admitted_p99_s": percentile(admitted, 0.99),
        "admitted_within_slo": sum(1 for s in admitted if s <= slo_s) / len(admitted) if admitted else 0.0,
        "goodput_rps": sum(1 for s in admitted if s <= slo_s) / seconds,
        "refused_share": len(refused) / len(outcomes) if outcomes else 0.0,
        "refused_p99_s": percentile(refused, 0.99),
        "timed_out_share": sum(1 for outcome, _ in outcomes if outcome == "DEADLINE_EXCEEDED") / len(outcomes) if outcomes else 0.0,
        "other_errors": sum(1 for outcome, _ in outcomes if outcome not in ("ok", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")),
    }


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ebbflow-overload-bench-"))
    nats_child, nats_url = await start_nats_server(work / "nats")
    bus = await connect(nats_url, name="overload-bench")
    replicas = StaticReplicas(bus, work / "llm", time_scale=args.time_scale)
    workers = RouterWorkers(RouterConfig(port=free_port(), http_port=-1), nats_url, work, work / "router-metrics")
    front = None
    try:
        await replicas.publish_model_configs()
        await put_policy(bus, "llm", min_replicas=1, max_replicas=1)
        replica = await replicas.start("llm")
        await workers.start()
        targets = {"router": f"127.0.0.1:{workers.config.port}"}
        if haproxy_binary() is not None:
            front, targets["router_haproxy"] = await start_front(work, nats_url, workers.config.port)
        else:
            print("  no haproxy binary: the router_haproxy target is skipped (apt-get install haproxy)", file=sys.stderr)
        payload = llm_request("a short prompt of six words", args.max_tokens)
        await asyncio.sleep(1.0)
        await closed_loop(replica.address, payload, args.limit, 2.0)  # warm
        latencies_ms, _ = await closed_loop(replica.address, payload, args.limit, args.capacity_seconds)
        capacity_rps = len(latencies_ms) / args.capacity_seconds
        slo_s = args.slo_factor * percentile(latencies_ms, 0.99) / 1e3
        rate = args.overload * capacity_rps
        rng = random.Random(7)
        arrivals, at = [], 0.0
        while True:
            at += rng.expovariate(rate)
            if at >= args.seconds:
                break
            arrivals.append(at)
        print(f"  capacity {capacity_rps:.1f} req/s at {args.limit} in flight, SLO {slo_s * 1e3:.0f} ms; sending {rate:.1f} req/s", file=sys.stderr)
        rows = []
        for target, address in targets.items():
            for shed in (args.limit, 0):
                await put_policy(bus, "llm", min_replicas=1, max_replicas=1, slo_latency_s=slo_s, shed_in_flight_per_replica=shed)
                await asyncio.sleep(1.5)  # the router and the front's reload follow the policy
                outcomes = await open_loop(address, payload, arrivals, args.give_up_factor * slo_s)
                rows.append({"target": target, "shedding": bool(shed), **score(outcomes, slo_s, args.seconds)})
                r = rows[-1]
                print(f"  {target:<15} shedding {'on ' if shed else 'off'} admitted p99 {r['admitted_p99_s'] * 1e3:.0f} ms, "
                      f"goodput {r['goodput_rps']:.1f} req/s, refused {r['refused_share']:.0%}", file=sys.stderr)  # fmt: skip
                await asyncio.sleep(args.give_up_factor * slo_s)  # the backlog of the run before drains
        return {"capacity_rps": capacity_rps, "slo_s": slo_s, "offered_rps": rate, "limit": args.limit, "rows": rows}
    finally:
        if front is not None:
            await front.stop(5.0)
        await workers.stop()
        await replicas.stop()
        await bus.close()
        await nats_child.stop(5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of overload per target and setting")
    parser.add_argument("--overload", type=float, default=3.0, help="offered load as a multiple of the measured capacity")
    parser.add_argument("--limit", type=int, default=4, help="shed_in_flight_per_replica, and the depth capacity is measured at")
    parser.add_argument("--max-tokens", type=int, default=40, help="output tokens per request")
    parser.add_argument("--time-scale", type=float, default=0.05, help="emulated time scale of the replica")
    parser.add_argument("--capacity-seconds", type=float, default=5.0, help="seconds of the capacity measurement")
    parser.add_argument("--slo-factor", type=float, default=1.5, help="SLO = this x the p99 latency at --limit in flight")
    parser.add_argument("--give-up-factor", type=float, default=5.0, help="clients give up after this x the SLO")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result))
    print()
    print(f"capacity {result['capacity_rps']:.1f} req/s, offered {result['offered_rps']:.1f} req/s, SLO {result['slo_s'] * 1e3:.0f} ms")
    print(f"{'target':<15} {'shedding':<8} {'adm p50 ms':>10} {'adm p99 ms':>10} {'in SLO':>7} {'goodput':>8} {'refused':>8} {'timed out':>9}")
    for r in result["rows"]:
        print(
            f"{r['target']:<15} {'on' if r['shedding'] else 'off':<8} {r['admitted_p50_s'] * 1e3:10.0f} {r['admitted_p99_s'] * 1e3:10.0f} "
            f"{r['admitted_within_slo']:7.0%} {r['goodput_rps']:8.1f} {r['refused_share']:8.0%} {r['timed_out_share']:9.0%}"
        )


if __name__ == "__main__":
    main()
