"""What checking API keys and request limits costs on the HAProxy front's fast path, side by side in one run.

Two fronts before the same Python router and `echo` replica (no work, so the
front's cost is what shows): one as by default, one with
`router.require_api_key` and a tenant whose key every request carries, with a
request limit high enough never to refuse (so the stick table is updated on
every request). Closed loops over gRPC (raw grpc.aio, key in the metadata)
and KServe v2 HTTP (aiohttp, key in the header) at each `--concurrency`,
interleaved over `--rounds` rounds with the order rotated. CPU per request
is summed over HAProxy and the front's Python shell from /proc.

Prints one JSON line, then a table with the ratios to the front without keys.

    .venv/bin/python benchmarks/auth_overhead.py [--seconds 2] [--rounds 3] [--concurrency 1 8]
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # before grpc is imported: replicas are forked while gRPC runs

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_overhead  # noqa: E402
from router_overhead import INFER, Tally, cpu_seconds, echo_request, put_policy  # noqa: E402

from ebbflow.actuator.static import StaticReplicas  # noqa: E402
from ebbflow.router.front import haproxy_binary  # noqa: E402
from ebbflow.router.worker import RouterWorkers  # noqa: E402
from ebbflow.runtime.bus import connect  # noqa: E402
from ebbflow.runtime.config import RouterConfig  # noqa: E402
from ebbflow.runtime.keys import key_hash  # noqa: E402
from ebbflow.runtime.nats_server import start_nats_server  # noqa: E402
from ebbflow.runtime.process import ChildProcess, free_port, spawn, venv_environment  # noqa: E402
from ebbflow.v1 import tenant_pb2  # noqa: E402

HERE = Path(__file__).resolve().parent
KEY = "ebf_benchmark-key"


async def grpc_loop(address: str, payload: bytes, concurrency: int, seconds: float, metadata: tuple, channels: int = 8) -> tuple[list[float], int]:
    """Latencies (ms) of every request completed in `seconds`, and the error count."""
    opened = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(channels)]
    calls = [c.unary_unary(INFER) for c in opened]
    latencies: list[float] = []
    errors = 0
    until = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal errors
        call = calls[index % channels]
        while time.perf_counter() < until:
            start = time.perf_counter()
            try:
                await call(payload, timeout=30, metadata=metadata)
                latencies.append((time.perf_counter() - start) * 1e3)
            except grpc.aio.AioRpcError:
                errors += 1

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    for channel in opened:
        await channel.close()
    return latencies, errors


async def start_front(work: Path, name: str, nats_url: str, router: RouterConfig, fallback: int, http_fallback: int) -> tuple[ChildProcess, str, str]:
    """An HAProxy front in its own process (`python -m ebbflow.router.front`): (process, gRPC address, HTTP address)."""
    config = RouterConfig(port=free_port(), http_port=free_port(), require_api_key=router.require_api_key)
    ready = work / f"{name}-ready"
    env = venv_environment()
    env.update(
        EBBFLOW_NATS_URL=nats_url,
        EBBFLOW_ROUTER_CONFIG=json.dumps(asdict(config)),
        EBBFLOW_FRONT_FALLBACK=f"127.0.0.1:{fallback}",
        EBBFLOW_FRONT_HTTP_FALLBACK=f"127.0.0.1:{http_fallback}",
        EBBFLOW_STATE_DIR=str(work / name),
        EBBFLOW_READY_FILE=str(ready),
    )
    child = await spawn(name, [sys.executable, "-m", "ebbflow.router.front"], work / "logs" / f"{name}.log", env)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if not child.running or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} did not start:\n{child.tail()}")
        await asyncio.sleep(0.05)
    return child, f"127.0.0.1:{config.port}", f"127.0.0.1:{config.http_port}"


def processes(child: ChildProcess) -> list[int]:
    return [child.pid, *(c.pid for c in psutil.Process(child.pid).children())]


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ebbflow-auth-bench-"))
    nats_child, nats_url = await start_nats_server(work / "nats")
    bus = await connect(nats_url, name="auth-bench")
    replicas = StaticReplicas(bus, work / "echo", time_scale=1.0, repository=HERE / "models")
    workers = RouterWorkers(RouterConfig(port=free_port(), http_port=free_port(), require_api_key=True), nats_url, work, work / "router-metrics")
    fronts: list[ChildProcess] = []
    try:
        await replicas.publish_model_configs()
        await put_policy(bus, "echo")
        tenant = tenant_pb2.Tenant(name="bench", key_sha256=key_hash(KEY), requests_per_minute=1_000_000_000, created_unix_s=time.time())
        await bus.tenants.put("bench", tenant.SerializeToString())
        await replicas.start("echo")
        await workers.start()
        targets = {}
        for name, keys in (("front", False), ("front_keys", True)):
            child, grpc_address, http_address = await start_front(
                work, name, nats_url, RouterConfig(require_api_key=keys), workers.config.port, workers.config.http_port
            )
            fronts.append(child)
            targets[name] = (grpc_address, http_address, processes(child), keys)
        await asyncio.sleep(1.5)  # the fronts pick up the replica (and the tenant) and reload
        payload = echo_request()
        rows = []
        names = list(targets)
        authorization = (("authorization", f"Bearer {KEY}"),)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
            for name in names:
                await http_overhead.wait_serving(session, targets[name][1])
            for protocol in ("grpc", "http"):
                for concurrency in args.concurrency:
                    tallies = {name: Tally() for name in names}
                    for round_index in range(args.rounds):
                        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                            grpc_address, http_address, pids, keys = targets[name]
                            tally = tallies[name]
                            if protocol == "http":
                                await http_overhead.measure(tally, session, http_address, pids, concurrency, args.seconds)
                                continue
                            await grpc_loop(grpc_address, payload, concurrency, min(1.0, args.seconds / 4), authorization)
                            cpu_before, wall_before = cpu_seconds(pids), time.perf_counter()
                            latencies, errors = await grpc_loop(grpc_address, payload, concurrency, args.seconds, authorization)
                            tally.wall_s += time.perf_counter() - wall_before
                            tally.cpu_s += cpu_seconds(pids) - cpu_before
                            tally.latencies_ms += latencies
                            tally.errors += errors
                    for name in names:
                        rows.append({"protocol": protocol, "concurrency": concurrency, "target": name, **tallies[name].result(True)})
                        r = rows[-1]
                        print(f"  {protocol} c={concurrency:<3} {name:<11} p50 {r['p50_ms']:.3f} ms  CPU {r['cpu_ms_per_request']:.3f} ms/req", file=sys.stderr)
        return {"rows": rows, "summary": summarize(rows)}
    finally:
        for child in fronts:
            await child.stop(5.0)
        await workers.stop()
        await replicas.stop()
        await bus.close()
        await nats_child.stop(5.0)


def summarize(rows: list[dict]) -> dict:
    """Per protocol and concurrency: the front with keys against the front without them."""
    by = {(r["protocol"], r["concurrency"], r["target"]): r for r in rows}
    out: dict[str, dict[str, float]] = {}
    for protocol, concurrency, target in by:
        if target != "front_keys":
            continue
        keys, plain = by[(protocol, concurrency, "front_keys")], by[(protocol, concurrency, "front")]
        out[f"{protocol} c={concurrency}"] = {
            "added_p50_ms": keys["p50_ms"] - plain["p50_ms"],
            "cpu_ratio": keys["cpu_ms_per_request"] / plain["cpu_ms_per_request"] if plain["cpu_ms_per_request"] else float("nan"),
            "errors": keys["errors"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per target, protocol, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the two fronts take turns going first)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    if haproxy_binary() is None:
        sys.exit("no haproxy binary: this benchmark measures the HAProxy front (apt-get install haproxy)")
    result = asyncio.run(run(args))
    print(json.dumps(result))
    print()
    print(f"{'protocol':<8} {'conc':>4}  {'target':<11} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'CPU ms/req':>10} {'errors':>6}")
    for r in result["rows"]:
        print(f"{r['protocol']:<8} {r['concurrency']:>4}  {r['target']:<11} {r['p50_ms']:7.3f} {r['p99_ms']:7.3f} {r['rps']:7.0f} {r['cpu_ms_per_request']:10.3f} {r['errors']:6d}")
    print()
    print(f"{'keys vs none':<14} {'+p50 ms':>8} {'CPU ratio':>9}")
    for name, s in result["summary"].items():
        print(f"{name:<14} {s['added_p50_ms']:8.3f} {s['cpu_ratio']:9.2f}")


if __name__ == "__main__":
    main()
