"""What the router costs, side by side in one run: direct to a replica, the naive proxy, the router.

1. Overhead. A raw grpc.aio load generator (pre-serialised ModelInferRequest,
   8 channels with their own connections, closed loop) drives the `echo`
   model (no work, so the proxies' cost is what shows) at concurrency 1, 8,
   32 and 64 against: the replica directly, benchmarks/naive_proxy.py, the
   router (`--router-workers` processes sharing one port), and the router
   behind its HAProxy front (router.front = haproxy; CPU summed over HAProxy,
   the front's Python process and the router workers; skipped when no
   `haproxy` binary is installed). Targets are
   interleaved per concurrency over `--rounds` rounds (each round a different
   target goes first) and pooled, so machine noise hits all alike. CPU per
   request is summed over every proxy process from /proc.
2. Routing policies. Three `llm` replicas, one 4x slower (the emulator's
   speed factor); closed-loop clients through the router (and the front)
   under each routing policy: latency percentiles and the slow replica's share.

Prints one JSON line, then readable tables. Needs no traces.

    .venv/bin/python benchmarks/router_overhead.py [--seconds 2] [--rounds 3] [--router-workers 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # before grpc is imported: replicas are forked while gRPC runs

import argparse  # noqa: E402
import asyncio  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402

from ebbflow.actuator.static import StaticReplicas  # noqa: E402
from ebbflow.demo import llm_inputs  # noqa: E402
from ebbflow.policy import ModelPolicy, policy_to_proto  # noqa: E402
from ebbflow.router.front import haproxy_binary  # noqa: E402
from ebbflow.router.worker import RouterWorkers  # noqa: E402
from ebbflow.runtime.bus import Bus, connect  # noqa: E402
from ebbflow.runtime.config import RouterConfig  # noqa: E402
from ebbflow.runtime.nats_server import start_nats_server  # noqa: E402
from ebbflow.runtime.process import ChildProcess, free_port, spawn, venv_environment  # noqa: E402

HERE = Path(__file__).resolve().parent
INFER = "/inference.GRPCInferenceService/ModelInfer"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q * 100)) if values else float("nan")


def echo_request(size: int = 64) -> bytes:
    request = service_pb2.ModelInferRequest(model_name="echo", id="bench")
    request.inputs.add(name="x", datatype="UINT8", shape=[size])
    request.raw_input_contents.append(bytes(i % 256 for i in range(size)))
    return request.SerializeToString()


def llm_request(prompt: str, max_tokens: int) -> bytes:
    request = service_pb2.ModelInferRequest(model_name="llm")
    for tensor in llm_inputs(prompt, max_tokens):
        request.inputs.append(tensor._get_tensor())
        request.raw_input_contents.append(tensor._get_content())
    return request.SerializeToString()


async def closed_loop(address: str, payload: bytes, concurrency: int, seconds: float, channels: int = 8) -> tuple[list[float], int]:
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
                await call(payload, timeout=30)
                latencies.append((time.perf_counter() - start) * 1e3)
            except grpc.aio.AioRpcError:
                errors += 1

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    for channel in opened:
        await channel.close()
    return latencies, errors


@dataclass
class Tally:
    """One target at one concurrency, pooled over rounds."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def result(self, has_processes: bool) -> dict[str, float]:
        n = len(self.latencies_ms)
        return {
            "p50_ms": percentile(self.latencies_ms, 0.5),
            "p99_ms": percentile(self.latencies_ms, 0.99),
            "rps": n / self.wall_s if self.wall_s else 0.0,
            "errors": self.errors,
            "cpu_ms_per_request": self.cpu_s * 1e3 / n if has_processes and n else 0.0,
        }


async def measure(tally: Tally, address: str, pids: list[int], payload: bytes, concurrency: int, seconds: float) -> None:
    await closed_loop(address, payload, concurrency, min(1.0, seconds / 4))  # warm connections and caches
    cpu_before, wall_before = cpu_seconds(pids), time.perf_counter()
    latencies, errors = await closed_loop(address, payload, concurrency, seconds)
    tally.wall_s += time.perf_counter() - wall_before
    tally.cpu_s += cpu_seconds(pids) - cpu_before
    tally.latencies_ms += latencies
    tally.errors += errors


async def put_policy(bus: Bus, model: str, **fields: object) -> None:
    await bus.policies.put(model, policy_to_proto(ModelPolicy(model=model, **fields).validate()).SerializeToString())  # type: ignore[arg-type]


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ebbflow-router-bench-"))
    nats_child, nats_url = await start_nats_server(work / "nats")
    bus = await connect(nats_url, name="router-bench")
    echo_replicas = StaticReplicas(bus, work / "echo", time_scale=1.0, repository=HERE / "models")
    llm_replicas = StaticReplicas(bus, work / "llm", time_scale=args.llm_time_scale)
    workers = RouterWorkers(RouterConfig(port=free_port(), http_port=-1, workers=args.router_workers), nats_url, work, work / "router-metrics")
    proxy = front = None
    try:
        await echo_replicas.publish_model_configs()
        await llm_replicas.publish_model_configs()
        await put_policy(bus, "echo")
        await put_policy(bus, "llm")
        echo = await echo_replicas.start("echo")
        await workers.start()
        router_address = f"127.0.0.1:{workers.config.port}"
        proxy_port = free_port()
        proxy = await spawn(
            "naive proxy",
            [sys.executable, str(HERE / "naive_proxy.py"), "--listen", f"127.0.0.1:{proxy_port}", "--upstream", echo.address],
            work / "logs" / "naive-proxy.log",
            venv_environment(),
        )
        front = None
        if haproxy_binary() is not None:
            front, front_address = await start_front(work, nats_url, workers.config.port)
        await asyncio.sleep(1.0)  # router workers pick up the echo replica from the registry; the proxy binds
        targets = {"direct": (echo.address, []), "naive_proxy": (f"127.0.0.1:{proxy_port}", [proxy.pid]), "router": (router_address, workers.pids)}
        if front is not None:  # HAProxy, the front's Python side and the router behind it, all counted
            targets["router_haproxy"] = (front_address, [*workers.pids, front.pid, *(c.pid for c in psutil.Process(front.pid).children())])
        else:
            print("  no haproxy binary: the router_haproxy target is skipped (apt-get install haproxy)", file=sys.stderr)
        payload = echo_request()
        overhead = []
        names = list(targets)
        for concurrency in args.concurrency:
            tallies = {name: Tally() for name in names}
            for round_index in range(args.rounds):
                for name in names[round_index % len(names) :] + names[: round_index % len(names)]:  # rotate who goes first
                    address, pids = targets[name]
                    await measure(tallies[name], address, pids, payload, concurrency, args.seconds)
            for name in names:
                result = tallies[name].result(bool(targets[name][1]))
                overhead.append({"concurrency": concurrency, "target": name, **result})
                print(f"  c={concurrency:<3} {name:<12} p50 {result['p50_ms']:.2f} ms  {result['rps']:.0f} req/s", file=sys.stderr)

        speeds = [1.0, 1.0, 0.25]
        slow = None
        for speed in speeds:
            replica = await llm_replicas.start("llm", speed_factor=speed)
            slow = replica if speed < 1 else slow
        assert slow is not None
        policies = []
        for routing, (target, address) in itertools.product(
            ("least_outstanding", "power_of_two", "round_robin"), [(t, targets[t][0]) for t in ("router", "router_haproxy") if t in targets]
        ):
            await put_policy(bus, "llm", routing=routing)
            await asyncio.sleep(1.0)  # the routers, and the front's reload, follow the policy
            before = await served_by(slow.address)
            latencies, errors = await closed_loop(address, llm_request("a short prompt of six words", 40), args.policy_clients, args.seconds * args.rounds)
            slow_count = await served_by(slow.address) - before
            policies.append(
                {
                    "target": target,
                    "routing": routing,
                    "p50_ms": percentile(latencies, 0.5),
                    "p99_ms": percentile(latencies, 0.99),
                    "rps": len(latencies) / (args.seconds * args.rounds),
                    "errors": errors,
                    "slow_replica_share": slow_count / max(1, len(latencies)),
                }
            )
            print(f"  {target:<15} {routing:<18} p99 {policies[-1]['p99_ms']:.1f} ms", file=sys.stderr)
        return {"overhead": overhead, "policies": policies, "router_workers": args.router_workers, "speed_factors": speeds}
    finally:
        if front is not None:
            await front.stop(5.0)
        if proxy is not None:
            await proxy.stop(2.0)
        await workers.stop()
        await echo_replicas.stop()
        await llm_replicas.stop()
        await bus.close()
        await nats_child.stop(5.0)


async def start_front(work: Path, nats_url: str, router_port: int) -> tuple[ChildProcess, str]:
    """The HAProxy front in its own process (`python -m ebbflow.router.front`) before the router workers."""
    port = free_port()
    ready = work / "front-ready"
    env = venv_environment()
    env.update(
        EBBFLOW_NATS_URL=nats_url,
        EBBFLOW_ROUTER_CONFIG=json.dumps(asdict(RouterConfig(port=port, http_port=-1))),
        EBBFLOW_FRONT_FALLBACK=f"127.0.0.1:{router_port}",
        EBBFLOW_STATE_DIR=str(work / "front"),
        EBBFLOW_READY_FILE=str(ready),
    )
    child = await spawn("haproxy front", [sys.executable, "-m", "ebbflow.router.front"], work / "logs" / "front.log", env)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if not child.running or time.monotonic() > deadline:
            raise RuntimeError(f"the haproxy front did not start:\n{child.tail()}")
        await asyncio.sleep(0.05)
    return child, f"127.0.0.1:{port}"


async def served_by(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        raw = await channel.unary_unary("/inference.GRPCInferenceService/ModelStatistics")(
            service_pb2.ModelStatisticsRequest(name="llm").SerializeToString(), timeout=5
        )
    return sum(s.inference_count for s in service_pb2.ModelStatisticsResponse.FromString(raw).model_stats)


def summarize(result: dict) -> dict:
    """Per concurrency and router target: added latency over direct, and CPU and throughput against the naive proxy."""
    rows = {(r["concurrency"], r["target"]): r for r in result["overhead"]}
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for concurrency in sorted({r["concurrency"] for r in result["overhead"]}):
        direct, naive = rows[(concurrency, "direct")], rows[(concurrency, "naive_proxy")]
        for target in ("naive_proxy", "router", "router_haproxy"):
            row = rows.get((concurrency, target))
            if row is None:
                continue
            summary.setdefault(str(concurrency), {})[target] = {
                "added_p50_ms": row["p50_ms"] - direct["p50_ms"],
                "added_p99_ms": row["p99_ms"] - direct["p99_ms"],
                "cpu_ratio_to_naive": row["cpu_ms_per_request"] / naive["cpu_ms_per_request"] if naive["cpu_ms_per_request"] else float("nan"),
                "rps_ratio_to_naive": row["rps"] / naive["rps"] if naive["rps"] else float("nan"),
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per target, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per concurrency (targets take turns going first)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--router-workers", type=int, default=1, help="router processes sharing the port")
    parser.add_argument("--llm-time-scale", type=float, default=0.02, help="emulated time scale of the llm replicas in the policy comparison")
    parser.add_argument("--policy-clients", type=int, default=12, help="closed-loop clients in the policy comparison")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    result["summary"] = summarize(result)
    print(json.dumps(result))
    print()
    print(f"{'conc':>4}  {'target':<15} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'CPU ms/req':>10}")
    for row in result["overhead"]:
        print(f"{row['concurrency']:>4}  {row['target']:<15} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {row['rps']:7.0f} {row['cpu_ms_per_request']:10.3f}")
    print()
    print(f"{'conc':>4}  {'target':<15} {'+p50 ms':>8} {'+p99 ms':>8} {'CPU / naive':>11} {'req/s / naive':>13}")
    for concurrency, targets in result["summary"].items():
        for target, s in targets.items():
            print(
                f"{concurrency:>4}  {target:<15} {s['added_p50_ms']:8.2f} {s['added_p99_ms']:8.2f} "
                f"{s['cpu_ratio_to_naive']:11.2f} {s['rps_ratio_to_naive']:13.2f}"
            )
    print()
    print(f"routing policies, replicas at speed {result['speed_factors']}:")
    print(f"{'target':<15} {'policy':<18} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'slow share':>10}")
    for row in result["policies"]:
        print(f"{row['target']:<15} {row['routing']:<18} {row['p50_ms']:7.1f} {row['p99_ms']:7.1f} {row['rps']:7.1f} {row['slow_replica_share']:10.2f}")


if __name__ == "__main__":
    main()
