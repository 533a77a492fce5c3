"""What the router's KServe v2 HTTP port costs, side by side in one run: direct to a replica, a naive proxy, the router.

A closed-loop aiohttp load generator (keep-alive connections, one per
client) POSTs a small KServe v2 JSON infer request (`/v2/models/echo/infer`,
64 UINT8 values; the `echo` model does no work, so the proxies' cost is what
shows) at concurrency 1 and 8 against:

- direct: the replica's own HTTP port;
- naive_proxy: benchmarks/naive_http_proxy.py (aiohttp server and client,
  uvloop, body and answer whole, one upstream);
- router: the Python router's HTTP port alone (router.rest in one worker
  process; what serves without HAProxy, and held requests behind it);
- router_haproxy: the HAProxy front's HTTP frontend before that router (its
  fast path forwards to the replica itself; CPU summed over HAProxy, the
  front's Python shell and the router worker).

Targets are interleaved per concurrency over `--rounds` rounds (each round
another goes first) and pooled. CPU per request is summed over each target's
proxy processes from /proc. Prints one JSON line, then a table.

    .venv/bin/python benchmarks/http_overhead.py [--seconds 2] [--rounds 3] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import aiohttp
import psutil

from ebbflow.actuator.static import StaticReplicas
from ebbflow.router.front import haproxy_binary
from ebbflow.router.worker import RouterWorkers
from ebbflow.runtime.bus import connect
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.nats_server import start_nats_server
from ebbflow.runtime.process import ChildProcess, free_port, spawn, venv_environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_overhead import Tally, cpu_seconds, put_policy, summarize  # noqa: E402  (the same summary as the gRPC benchmark's)

HERE = Path(__file__).resolve().parent
PATH = "/v2/models/echo/infer"
BODY = json.dumps({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [64], "data": [i % 256 for i in range(64)]}]}).encode()


async def closed_loop(session: aiohttp.ClientSession, address: str, concurrency: int, seconds: float) -> tuple[list[float], int]:
    """Latencies (ms) of every request completed in `seconds`, and the error count (anything but a correct 200)."""
    url = f"http://{address}{PATH}"
    latencies: list[float] = []
    errors = 0
    until = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < until:
            start = time.perf_counter()
            try:
                async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as answer:
                    body = await answer.read()
                if answer.status == 200 and b'"y"' in body:
                    latencies.append((time.perf_counter() - start) * 1e3)
                else:
                    errors += 1
            except aiohttp.ClientError:
                errors += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors


async def measure(tally: Tally, session: aiohttp.ClientSession, address: str, pids: list[int], concurrency: int, seconds: float) -> None:
    await closed_loop(session, address, concurrency, min(1.0, seconds / 4))  # warm connections and caches
    cpu_before, wall_before = cpu_seconds(pids), time.perf_counter()
    latencies, errors = await closed_loop(session, address, concurrency, seconds)
    tally.wall_s += time.perf_counter() - wall_before
    tally.cpu_s += cpu_seconds(pids) - cpu_before
    tally.latencies_ms += latencies
    tally.errors += errors


async def wait_serving(session: aiohttp.ClientSession, address: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latencies, _ = await closed_loop(session, address, 1, 0.05)
        if latencies:
            return
        await asyncio.sleep(0.1)
    async with session.post(f"http://{address}{PATH}", data=BODY) as answer:
        raise RuntimeError(f"{address} does not serve {PATH}: HTTP {answer.status} {(await answer.read())[:300]!r}")


async def start_front(work: Path, nats_url: str, router_port: int, router_http_port: int) -> tuple[ChildProcess, str]:
    """The HAProxy front in its own process (`python -m ebbflow.router.front`), gRPC and HTTP, before the router."""
    port, http_port = free_port(), free_port()
    ready = work / "front-ready"
    env = venv_environment()
    env.update(
        EBBFLOW_NATS_URL=nats_url,
        EBBFLOW_ROUTER_CONFIG=json.dumps(asdict(RouterConfig(port=port, http_port=http_port))),
        EBBFLOW_FRONT_FALLBACK=f"127.0.0.1:{router_port}",
        EBBFLOW_FRONT_HTTP_FALLBACK=f"127.0.0.1:{router_http_port}",
        EBBFLOW_STATE_DIR=str(work / "front"),
        EBBFLOW_READY_FILE=str(ready),
    )
    child = await spawn("haproxy front", [sys.executable, "-m", "ebbflow.router.front"], work / "logs" / "front.log", env)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if not child.running or time.monotonic() > deadline:
            raise RuntimeError(f"the haproxy front did not start:\n{child.tail()}")
        await asyncio.sleep(0.05)
    return child, f"127.0.0.1:{http_port}"


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ebbflow-http-bench-"))
    nats_child, nats_url = await start_nats_server(work / "nats")
    bus = await connect(nats_url, name="http-bench")
    replicas = StaticReplicas(bus, work / "echo", time_scale=1.0, repository=HERE / "models")
    workers = RouterWorkers(RouterConfig(port=free_port(), http_port=free_port(), workers=1), nats_url, work, work / "router-metrics")
    proxy = front = None
    # No Accept-Encoding (tritonclient sends none): Triton would gzip its answers, which no proxy needs to.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), skip_auto_headers=("Accept-Encoding",))
    try:
        await replicas.publish_model_configs()
        await put_policy(bus, "echo")
        echo = await replicas.start("echo")
        direct = f"127.0.0.1:{echo.entry.http_port}"
        await workers.start()
        proxy_port = free_port()
        proxy = await spawn(
            "naive http proxy",
            [sys.executable, str(HERE / "naive_http_proxy.py"), "--listen", f"127.0.0.1:{proxy_port}", "--upstream", direct],
            work / "logs" / "naive-http-proxy.log",
            venv_environment(),
        )
        targets = {
            "direct": (direct, []),
            "naive_proxy": (f"127.0.0.1:{proxy_port}", [proxy.pid]),
            "router": (f"127.0.0.1:{workers.config.http_port}", workers.pids),
        }
        if haproxy_binary() is not None:
            front, front_address = await start_front(work, nats_url, workers.config.port, workers.config.http_port)
            targets["router_haproxy"] = (front_address, [*workers.pids, front.pid, *(c.pid for c in psutil.Process(front.pid).children())])
        else:
            print("  no haproxy binary: the router_haproxy target is skipped (apt-get install haproxy)", file=sys.stderr)
        for address, _ in targets.values():
            await wait_serving(session, address)
        await asyncio.sleep(1.0)  # the front's reload that puts the replica in its HTTP backend
        rows = []
        names = list(targets)
        for concurrency in args.concurrency:
            tallies = {name: Tally() for name in names}
            for round_index in range(args.rounds):
                for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                    address, pids = targets[name]
                    await measure(tallies[name], session, address, pids, concurrency, args.seconds)
            for name in names:
                result = tallies[name].result(bool(targets[name][1]))
                rows.append({"concurrency": concurrency, "target": name, **result})
                print(f"  c={concurrency:<3} {name:<15} p50 {result['p50_ms']:.2f} ms  {result['rps']:.0f} req/s", file=sys.stderr)
        return {"overhead": rows, "request_bytes": len(BODY)}
    finally:
        await session.close()
        if front is not None:
            await front.stop(5.0)
        if proxy is not None:
            await proxy.stop(2.0)
        await workers.stop()
        await replicas.stop()
        await bus.close()
        await nats_child.stop(5.0)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per target, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per concurrency (targets take turns going first)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    result = asyncio.run(run(args))
    result["summary"] = summarize(result)
    print(json.dumps(result))
    print()
    print(f"{'conc':>4}  {'target':<15} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'CPU ms/req':>10} {'errors':>6}")
    for row in result["overhead"]:
        print(
            f"{row['concurrency']:>4}  {row['target']:<15} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {row['rps']:7.0f} "
            f"{row['cpu_ms_per_request']:10.3f} {row['errors']:6d}"
        )
    print()
    print(f"{'conc':>4}  {'target':<15} {'+p50 ms':>8} {'+p99 ms':>8} {'CPU / naive':>11} {'req/s / naive':>13}")
    for concurrency, targets in result["summary"].items():
        for target, s in targets.items():
            print(
                f"{concurrency:>4}  {target:<15} {s['added_p50_ms']:8.2f} {s['added_p99_ms']:8.2f} "
                f"{s['cpu_ratio_to_naive']:11.2f} {s['rps_ratio_to_naive']:13.2f}"
            )


if __name__ == "__main__":
    main()
