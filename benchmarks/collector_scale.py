"""How many replica endpoints one collector process keeps at 1 Hz on one core.

A text server (raw asyncio HTTP/1.1 keep-alive on uvloop, pinned to its own
core) replays a /metrics text recorded from the real tritonserver
(tests/data/): one model on CPU, and four models with GPU families for eight
GPUs. Each endpoint is a distinct loopback address (127.0.x.y) on the
server's port, so every endpoint is its own keep-alive connection. The
endpoints are registered READY in a real nats-server's registry, and the real
Collector (scrape, parse, rates, snapshots with windows, history, NATS
publish, Prometheus export) runs in a child process pinned to another core
with a raised open-files limit. Its CPU comes from the OS (getrusage).

Side by side in one run: the collector's fast /metrics reader against
prometheus_client's full parser (the baseline) at the same endpoint count.
"Kept at 1 Hz" means the ticks kept their 1 s cadence (>= 0.95 per second)
with a median tick under 0.9 s (headroom), and every endpoint's data was
fresh at the end.

Prints one JSON line, then a readable table. Needs no traces.

    .venv/bin/python benchmarks/collector_scale.py [--endpoints 250 500 1000 2000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXTS = {"1 model, CPU": ROOT / "tests" / "data" / "triton_metrics_llm.txt", "4 models, 8 GPUs": ROOT / "tests" / "data" / "triton_metrics_4models_8gpus.txt"}


def pin(core: int) -> None:
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[core % len(cores)]})


def endpoint_host(index: int) -> str:
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


# ---- the text server (child process) --------------------------------------------------------------


def serve(text_path: Path, port: int, core: int) -> None:
    import uvloop

    pin(core)
    body = text_path.read_bytes()
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    class Metrics(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.transport.write(response)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Metrics, "0.0.0.0", port, backlog=4096, reuse_port=True)
        async with server:
            await server.serve_forever()

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    uvloop.run(main())


# ---- the collector (child process) ----------------------------------------------------------------


def reference_parser():  # type: ignore[no-untyped-def]
    """The baseline: prometheus_client's full parser, summed into the same shape."""
    from prometheus_client.parser import text_string_to_metric_families

    from ebbflow.collector.metrics_text import GPU_GAUGES, HOST_GAUGES, WANTED, MetricsText

    def parse(text: bytes) -> MetricsText:
        parsed = MetricsText()
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                name = sample.name if sample.name in WANTED else sample.name.removesuffix("_total")
                if name not in WANTED:
                    continue
                if name in HOST_GAUGES:
                    parsed.host[name] = parsed.host.get(name, 0.0) + sample.value
                    continue
                label, table = ("gpu_uuid", parsed.gpus) if name in GPU_GAUGES else ("model", parsed.models)
                if label in sample.labels:
                    entry = table.setdefault(sample.labels[label], {})
                    entry[name] = entry.get(name, 0.0) + sample.value
        return parsed

    return parse


def collect(nats_url: str, seconds: float, warmup_s: float, parser: str, core: int) -> None:
    from prometheus_client import CollectorRegistry

    from ebbflow.collector import service
    from ebbflow.runtime.config import CollectorConfig
    from ebbflow.runtime.registry import connected
    from ebbflow.v1 import load_pb2

    pin(core)
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    if parser == "reference":
        service.parse_metrics_text = reference_parser()

    async def main() -> dict:
        async with connected(nats_url, "collector-bench") as (bus, view):
            stop = asyncio.Event()
            collector = service.Collector(CollectorConfig(history_flush_s=10.0), bus, view, service.CollectorMetrics(CollectorRegistry()))
            ticks: list[float] = []
            tick = collector.tick

            async def timed_tick(session):  # type: ignore[no-untyped-def]
                started = time.monotonic()
                await tick(session)
                ticks.append(time.monotonic() - started)

            collector.tick = timed_tick  # type: ignore[method-assign]
            task = asyncio.create_task(collector.run(stop))
            await asyncio.sleep(warmup_s)
            ticks.clear()
            usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            await asyncio.sleep(seconds)
            after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall
            replicas = [r for s in collector.latest.values() for r in s.replicas]
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
        return {
            "cpu_fraction": (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) / elapsed,
            "ticks_per_s": len(ticks) / elapsed,
            "tick_p50_s": sorted(ticks)[len(ticks) // 2] if ticks else float("nan"),
            "tick_max_s": max(ticks) if ticks else float("nan"),
            "fresh_fraction": sum(r.status == load_pb2.DATA_STATUS_FRESH for r in replicas) / max(1, len(replicas)),
            "replicas_seen": len(replicas),
        }

    print(json.dumps(asyncio.run(main())))


# ---- the orchestration ----------------------------------------------------------------------------


async def register(nats_url: str, endpoints: int, models: list[str], port: int) -> None:
    from ebbflow.runtime import subjects
    from ebbflow.runtime.bus import connect
    from ebbflow.v1 import registry_pb2

    bus = await connect(nats_url, name="collector-bench-registry")
    for key in await _keys(bus):
        await bus.replicas.purge(key)
    puts = []
    for index in range(endpoints):
        model = models[index % len(models)]
        entry = registry_pb2.ReplicaEntry(
            model=model, replica_id=f"r{index:05d}", host=endpoint_host(index), grpc_port=1, http_port=1, metrics_port=port, state=registry_pb2.REPLICA_STATE_READY
        )
        puts.append(bus.replicas.put(subjects.replica_key(model, entry.replica_id), entry.SerializeToString()))
        if len(puts) == 200:
            await asyncio.gather(*puts)
            puts = []
    await asyncio.gather(*puts)
    await bus.close()


async def _keys(bus) -> list[str]:  # type: ignore[no-untyped-def]
    try:
        return await bus.replicas.keys()
    except Exception:  # no keys yet
        return []


def run_collector(nats_url: str, seconds: float, parser: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--role", "collector", "--nats-url", nats_url, "--seconds", str(seconds), "--parser", parser],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def orchestrate(args: argparse.Namespace) -> dict:
    from ebbflow.collector.metrics_text import parse_metrics_text
    from ebbflow.runtime.nats_server import start_nats_server
    from ebbflow.runtime.process import free_port

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        nats, nats_url = await start_nats_server(Path(tmp))
        try:
            for label, text in TEXTS.items():
                models = sorted(parse_metrics_text(text.read_bytes()).models)
                port = free_port("0.0.0.0")
                server = subprocess.Popen([sys.executable, __file__, "--role", "server", "--text", str(text), "--port", str(port)])
                try:
                    for parser in ("fast", "reference"):
                        for endpoints in args.endpoints if parser == "fast" else [args.baseline_endpoints]:
                            await register(nats_url, endpoints, models, port)
                            result = await asyncio.to_thread(run_collector, nats_url, args.seconds, parser)
                            result |= {"text": label, "parser": parser, "endpoints": endpoints}
                            result["kept_1hz"] = result["ticks_per_s"] >= 0.95 and result["tick_p50_s"] < 0.9 and result["fresh_fraction"] == 1.0
                            results.append(result)
                            print(f"  {label:17} {parser:9} {endpoints:5} endpoints: cpu {result['cpu_fraction']:.2f} core, "
                                  f"{result['ticks_per_s']:.2f} ticks/s, fresh {result['fresh_fraction']:.2f}", file=sys.stderr)
                finally:
                    server.terminate()
                    server.wait()
        finally:
            await nats.stop(5.0)
    return {"benchmark": "collector_scale", "seconds": args.seconds, "cores": len(os.sched_getaffinity(0)), "results": results}


def table(report: dict) -> str:
    lines = [f"{'text':17} {'parser':9} {'endpoints':>9} {'CPU (core)':>10} {'ticks/s':>8} {'tick p50':>9} {'tick max':>9} {'fresh':>6} {'1 Hz':>5}"]
    for r in report["results"]:
        lines.append(
            f"{r['text']:17} {r['parser']:9} {r['endpoints']:9d} {r['cpu_fraction']:10.2f} {r['ticks_per_s']:8.2f} "
            f"{r['tick_p50_s'] * 1000:7.0f}ms {r['tick_max_s'] * 1000:7.0f}ms {r['fresh_fraction']:6.2f} {'yes' if r['kept_1hz'] else 'NO':>5}"
        )
    for text in TEXTS:
        fast = [r for r in report["results"] if r["text"] == text and r["parser"] == "fast"]
        base = [r for r in report["results"] if r["text"] == text and r["parser"] == "reference"]
        if base:
            same = [r for r in fast if r["endpoints"] == base[0]["endpoints"]]
            if same:
                lines.append(f"{text}: CPU fast/reference at {base[0]['endpoints']} endpoints = {same[0]['cpu_fraction'] / base[0]['cpu_fraction']:.2f}x")
        kept = [r["endpoints"] for r in fast if r["kept_1hz"]]
        lines.append(f"{text}: most endpoints kept at 1 Hz on one core: {max(kept) if kept else 0}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("orchestrate", "server", "collector"), default="orchestrate", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", type=int, nargs="+", default=[250, 500, 1000, 1500])
    parser.add_argument("--baseline-endpoints", type=int, default=500, help="endpoint count of the prometheus_client parser baseline")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per point (after a 4 s warm-up)")
    parser.add_argument("--text", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    parser.add_argument("--parser", default="fast", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        serve(args.text, args.port, core=1)
    elif args.role == "collector":
        collect(args.nats_url, args.seconds, 4.0, args.parser, core=0)
    else:
        report = asyncio.run(orchestrate(args))
        print(json.dumps(report))
        print(table(report))


if __name__ == "__main__":
    main()
