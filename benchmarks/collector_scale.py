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

`--mode shards`: the same endpoints (2,000 by default, the 4-model text)
scraped by two collector processes sharing the models (collector/shards.py),
each announced in the `services` bucket under its own id and pinned to its
own core where the machine has one, side by side with one collector alone
on the same endpoints (the baseline). Models are the unit of sharding, so it
runs two layouts: the text's 4 models (500 endpoints each), and 40 models
(the text relabelled into 10 groups, 50 endpoints each). A collector's
snapshots/s is what it published; "each model" is what a subscriber counted
per model, which is 1/s when every model is published once per interval.

Prints one JSON line, then a readable table. Needs no traces.

    .venv/bin/python benchmarks/collector_scale.py [--endpoints 250 500 1000 2000] [--seconds 15]
    .venv/bin/python benchmarks/collector_scale.py --mode shards [--shard-endpoints 2000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
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


def endpoint_index(host: str) -> int:
    _, _, third, fourth = host.split(".")
    return (int(third) - 1) * 250 + int(fourth) - 1


def endpoint_model(index: int, models: list[str], groups: int) -> str:
    """The model an endpoint serves: the text's models in turn, relabelled `g<k>_<model>` with several groups."""
    model = models[index % len(models)]
    return model if groups == 1 else f"g{(index // len(models)) % groups}_{model}"


# ---- the text server (child process) --------------------------------------------------------------


def serve(text_path: Path, port: int, core: int, groups: int) -> None:
    import uvloop

    pin(core)
    text = text_path.read_bytes()
    models = len(set(re.findall(rb'model="([^"]+)"', text)))
    bodies = [text if groups == 1 else text.replace(b'model="', b'model="g%d_' % group) for group in range(groups)]
    responses = [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % len(body) + body for body in bodies]

    class Metrics(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""
            # Which endpoint was called is the loopback address it was called on.
            index = endpoint_index(transport.get_extra_info("sockname")[0])
            self.response = responses[(index // models) % groups]

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.transport.write(self.response)  # type: ignore[attr-defined]

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


def collect(nats_url: str, seconds: float, warmup_s: float, parser: str, core: int, instance: str = "") -> None:
    """One collector; with `instance`, sharing the models with the other collectors announced (as `ebbflow serve collector`)."""
    from prometheus_client import CollectorRegistry

    from ebbflow.collector import service
    from ebbflow.collector.membership import Membership
    from ebbflow.runtime.config import CollectorConfig
    from ebbflow.runtime.discovery import Announcer
    from ebbflow.runtime.registry import connected
    from ebbflow.v1 import discovery_pb2, load_pb2

    pin(core)
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    if parser == "reference":
        service.parse_metrics_text = reference_parser()

    async def main() -> dict:
        async with connected(nats_url, f"collector-bench-{instance}") as (bus, view):
            stop = asyncio.Event()
            registry = CollectorRegistry()
            membership = Membership(instance) if instance else None
            collector = service.Collector(CollectorConfig(history_flush_s=10.0), bus, view, service.CollectorMetrics(registry), membership)
            ticks: list[float] = []
            published: list[int] = []
            tick = collector.tick

            async def timed_tick(session):  # type: ignore[no-untyped-def]
                started = time.monotonic()
                await tick(session)
                ticks.append(time.monotonic() - started)
                published.append(len(collector.owned))

            collector.tick = timed_tick  # type: ignore[method-assign]
            task = asyncio.create_task(collector.run(stop))
            tasks = [task]
            if instance:
                tasks.append(asyncio.create_task(Announcer(bus, discovery_pb2.ServiceInstance(service="collector", instance_id=instance)).run(stop)))
            await asyncio.sleep(warmup_s)
            ticks.clear()
            published.clear()
            usage, wall, start_unix_s = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), time.time()
            await asyncio.sleep(seconds)
            after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall
            replicas = [r for model in collector.owned for r in collector.latest[model].replicas]
            owned_models = len(collector.owned)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "cpu_fraction": (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) / elapsed,
            "ticks_per_s": len(ticks) / elapsed,
            "tick_p50_s": sorted(ticks)[len(ticks) // 2] if ticks else float("nan"),
            "tick_max_s": max(ticks) if ticks else float("nan"),
            "fresh_fraction": sum(r.status == load_pb2.DATA_STATUS_FRESH for r in replicas) / max(1, len(replicas)),
            "replicas_seen": len(replicas),
            "models_owned": owned_models,
            "snapshots_per_s": sum(published) / elapsed,
            "window_unix_s": [start_unix_s, start_unix_s + elapsed],
        }

    print(json.dumps(asyncio.run(main())))


# ---- the orchestration ----------------------------------------------------------------------------


async def register(nats_url: str, endpoints: int, models: list[str], port: int, groups: int = 1) -> None:
    from ebbflow.runtime import subjects
    from ebbflow.runtime.bus import connect
    from ebbflow.v1 import registry_pb2

    bus = await connect(nats_url, name="collector-bench-registry")
    for key in await _keys(bus):
        await bus.replicas.purge(key)
    puts = []
    for index in range(endpoints):
        model = endpoint_model(index, models, groups)
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


def run_collector(nats_url: str, seconds: float, parser: str, instance: str = "", core: int = 0) -> dict:
    command = [sys.executable, __file__, "--role", "collector", "--nats-url", nats_url, "--seconds", str(seconds), "--parser", parser, "--core", str(core)]
    out = subprocess.run([*command, *(["--instance", instance] if instance else [])], capture_output=True, text=True, check=True)
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
                server = subprocess.Popen([sys.executable, __file__, "--role", "server", "--text", str(text), "--port", str(port), "--groups", "1"])
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


SHARD_LAYOUTS = {"4 models": 1, "40 models": 10}
"""Model layouts of the shards mode: name -> groups of the 4-model text (each group relabels the text's models)."""
SHARD_TEXT = "4 models, 8 GPUs"


async def orchestrate_shards(args: argparse.Namespace) -> dict:
    """One collector alone, then two sharing the models, on the same endpoints, for each model layout."""
    import psutil

    from ebbflow.collector.metrics_text import parse_metrics_text
    from ebbflow.runtime import subjects
    from ebbflow.runtime.bus import connect
    from ebbflow.runtime.nats_server import start_nats_server
    from ebbflow.runtime.process import free_port

    text = TEXTS[SHARD_TEXT]
    models = sorted(parse_metrics_text(text.read_bytes()).models)
    cores = len(os.sched_getaffinity(0))
    # The text server on core 1; collectors on 0 and 2 (on a 2-core machine the second shares core 1 with the server).
    collector_cores = [0, 2 if cores > 2 else 1]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        nats, nats_url = await start_nats_server(Path(tmp))
        observer = await connect(nats_url, name="collector-bench-observer")
        arrivals: list[tuple[float, str]] = []

        async def on_load(msg) -> None:  # type: ignore[no-untyped-def]
            arrivals.append((time.time(), msg.subject[len(subjects.LOAD) + 1 :]))

        await observer.nc.subscribe(f"{subjects.LOAD}.>", cb=on_load)
        try:
            for layout, groups in SHARD_LAYOUTS.items():
                port = free_port("0.0.0.0")
                server = subprocess.Popen([sys.executable, __file__, "--role", "server", "--text", str(text), "--port", str(port), "--groups", str(groups)])
                try:
                    await register(nats_url, args.shard_endpoints, models, port, groups)
                    model_count = len({endpoint_model(i, models, groups) for i in range(args.shard_endpoints)})
                    for collectors in (1, 2):
                        arrivals.clear()
                        server_cpu, started = psutil.Process(server.pid).cpu_times(), time.monotonic()
                        members = await asyncio.gather(*(
                            asyncio.to_thread(run_collector, nats_url, args.seconds, "fast", f"bench-collector-{n + 1}", collector_cores[n]) for n in range(collectors)
                        ))
                        after = psutil.Process(server.pid).cpu_times()
                        start, end = max(m["window_unix_s"][0] for m in members), min(m["window_unix_s"][1] for m in members)
                        per_model = {}
                        for at, model in arrivals:
                            if start <= at < end:
                                per_model[model] = per_model.get(model, 0) + 1
                        rates = [per_model.get(model, 0) / (end - start) for model in {endpoint_model(i, models, groups) for i in range(args.shard_endpoints)}]
                        for member in members:
                            member["kept_1hz"] = member["ticks_per_s"] >= 0.95 and member["tick_p50_s"] < 0.9 and member["fresh_fraction"] == 1.0
                        run = {
                            "layout": layout,
                            "models": model_count,
                            "endpoints": args.shard_endpoints,
                            "collectors": collectors,
                            "members": members,
                            "per_model_publish_rate_min": min(rates),
                            "per_model_publish_rate_max": max(rates),
                            "server_cpu_fraction": (after.user + after.system - server_cpu.user - server_cpu.system) / (time.monotonic() - started),
                            "kept_1hz": all(m["kept_1hz"] for m in members) and sum(m["replicas_seen"] for m in members) == args.shard_endpoints,
                        }
                        runs.append(run)
                        cpu = ", ".join(f"{m['cpu_fraction']:.2f}" for m in members)
                        ticks = ", ".join(f"{m['ticks_per_s']:.2f}" for m in members)
                        print(f"  {layout:9} {collectors} collector(s): cpu {cpu} core, ticks/s {ticks}, each model {min(rates):.2f}-{max(rates):.2f}/s", file=sys.stderr)
                finally:
                    server.terminate()
                    server.wait()
        finally:
            await observer.close()
            await nats.stop(5.0)
    return {"benchmark": "collector_scale", "mode": "shards", "text": SHARD_TEXT, "seconds": args.seconds, "cores": cores, "collector_cores": collector_cores, "runs": runs}


def per_tick(members: list[dict]) -> float:
    """Core-seconds per tick, summed over collectors (one that cannot keep up ticks less often, so its CPU per second hides work)."""
    return sum(m["cpu_fraction"] / m["ticks_per_s"] for m in members)


def shards_table(report: dict) -> str:
    lines = [
        f"{'layout':9} {'run':12} {'collector':>9} {'models':>6} {'endpoints':>9} {'CPU (core)':>10} {'ticks/s':>8} {'tick p50':>9} {'tick max':>9} "
        f"{'fresh':>6} {'snapshots/s':>11} {'1 Hz':>5}"
    ]
    for run in report["runs"]:
        label = "1 collector" if run["collectors"] == 1 else f"{run['collectors']} collectors"
        for n, m in enumerate(run["members"]):
            lines.append(
                f"{run['layout']:9} {label:12} {n + 1:9d} {m['models_owned']:6d} {m['replicas_seen']:9d} "
                f"{m['cpu_fraction']:10.2f} {m['ticks_per_s']:8.2f} {m['tick_p50_s'] * 1000:7.0f}ms {m['tick_max_s'] * 1000:7.0f}ms {m['fresh_fraction']:6.2f} "
                f"{m['snapshots_per_s']:11.2f} {'yes' if m['kept_1hz'] else 'NO':>5}"
            )
    for layout in SHARD_LAYOUTS:
        one = next((r for r in report["runs"] if r["layout"] == layout and r["collectors"] == 1), None)
        two = next((r for r in report["runs"] if r["layout"] == layout and r["collectors"] == 2), None)
        if one is None or two is None:
            continue
        alone = one["members"][0]
        busiest = max(two["members"], key=lambda m: m["cpu_fraction"])
        lines.append(
            f"{layout}, {one['endpoints']} endpoints: one collector {'kept' if one['kept_1hz'] else 'did NOT keep'} 1 Hz; two {'kept' if two['kept_1hz'] else 'did NOT keep'} it "
            f"(endpoints split {'/'.join(str(m['replicas_seen']) for m in two['members'])}); busiest of two / one alone: CPU {busiest['cpu_fraction'] / alone['cpu_fraction']:.2f}x, "
            f"tick p50 {busiest['tick_p50_s'] / alone['tick_p50_s']:.2f}x; CPU per tick of both / one alone {per_tick(two['members']) / per_tick(one['members']):.2f}x; "
            f"each model published {two['per_model_publish_rate_min']:.2f}-{two['per_model_publish_rate_max']:.2f}/s by the two "
            f"({one['per_model_publish_rate_min']:.2f}-{one['per_model_publish_rate_max']:.2f}/s by one); text server {two['server_cpu_fraction']:.2f} core"
        )
    lines.append(f"cores: {report['cores']}; collectors pinned to {report['collector_cores']}, the text server to 1")
    return "\n".join(lines)


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
    parser.add_argument("--mode", choices=("scale", "shards"), default="scale", help="scale: endpoints one collector keeps; shards: one collector against two sharing the models")
    parser.add_argument("--shard-endpoints", type=int, default=2000, help="endpoints of the shards mode")
    parser.add_argument("--endpoints", type=int, nargs="+", default=[250, 500, 1000, 1500])
    parser.add_argument("--baseline-endpoints", type=int, default=500, help="endpoint count of the prometheus_client parser baseline")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per point (after a 4 s warm-up)")
    parser.add_argument("--text", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    parser.add_argument("--parser", default="fast", help=argparse.SUPPRESS)
    parser.add_argument("--groups", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--instance", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        serve(args.text, args.port, core=1, groups=args.groups)
    elif args.role == "collector":
        collect(args.nats_url, args.seconds, 5.0 if args.instance else 4.0, args.parser, core=args.core, instance=args.instance)
    elif args.mode == "shards":
        report = asyncio.run(orchestrate_shards(args))
        print(json.dumps(report))
        print(shards_table(report))
    else:
        report = asyncio.run(orchestrate(args))
        print(json.dumps(report))
        print(table(report))


if __name__ == "__main__":
    main()
