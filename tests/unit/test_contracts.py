"""Generated code matches the protos, and pure cores stay pure."""

import ast
import filecmp
import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_regenerating_protos_changes_nothing(tmp_path: Path):
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    generated = tmp_path / "ebbflow" / "v1"
    committed = ROOT / "services" / "ebbflow" / "v1"
    names = sorted(p.name for p in generated.iterdir() if p.is_file())
    assert names, "nothing was generated"
    match, mismatch, errors = filecmp.cmpfiles(generated, committed, names, shallow=False)
    assert not mismatch and not errors, f"generated code is stale, run `make proto`: {mismatch + errors}"


FORBIDDEN = {"asyncio", "grpc", "nats", "prometheus_client", "opentelemetry", "aiohttp", "subprocess", "socket", "signal", "multiprocessing", "threading"}
PACKAGE = ROOT / "services" / "ebbflow"
CHECKED = ["emulator", "collector", "forecaster", "scheduler", "router", "actuator", "sim", "policy.py", "placement.py", "traces.py", "runtime/wire.py", "runtime/pending.py"]
"""Where decisions and physics live: every module here is pure unless SHELLS names it."""

SHELLS = {
    "emulator/triton_llm.py": "the Triton Python-backend model: serves requests in real time",
    "collector/api.py": "gRPC API",
    "collector/service.py": "scrapes replicas, subscribes, publishes",
    "collector/membership.py": "watches the collectors' announcements in NATS KV (shards.py is its pure rule)",
    "forecaster/api.py": "gRPC API",
    "forecaster/service.py": "subscribes, refills from the collector, publishes",
    "scheduler/api.py": "gRPC APIs",
    "scheduler/service.py": "subscribes, evaluates on a clock, publishes",
    "scheduler/publish.py": "writes desired state and decisions to NATS",
    "scheduler/curves.py": "stores measured curves in NATS KV",
    "scheduler/leadership.py": "reads and writes the leadership lease in NATS KV (lease.py is its pure rule)",
    "scheduler/keda.py": "KEDA's external scaler gRPC service over the decisions",
    "router/server.py": "gRPC servicer",
    "router/upstreams.py": "gRPC channels to replicas",
    "router/holding.py": "waits for replicas, publishes wake-ups",
    "router/forwarding.py": "gRPC calls to replicas",
    "router/telemetry.py": "Prometheus metrics, publishes telemetry",
    "router/streaming.py": "gRPC streams",
    "router/refusal.py": "gRPC status codes of refusals (imports grpc for them; no I/O)",
    "router/answers.py": "gRPC status codes of refused methods (imports grpc for them; no I/O)",
    "router/tenants.py": "gRPC status codes of a tenant's refusals (imports grpc for them; no I/O)",
    "scheduler/tenants_api.py": "the TenantService: gRPC server, NATS KV writes",
    "router/worker.py": "the router's processes",
    "router/front.py": "runs HAProxy",
    "router/rest.py": "aiohttp server and client: the router's HTTP port",
    "router/openai_http.py": "aiohttp: the OpenAI-compatible API on the router's HTTP port",
    "actuator/local.py": "the local actuator's loop",
    "actuator/lifecycle.py": "starts and stops tritonserver processes",
    "actuator/drain.py": "waits for acknowledgements, signals processes",
    "actuator/vertical.py": "reloads through Triton's repository API",
    "actuator/consolidation.py": "moves replicas",
    "actuator/replica.py": "writes the registry",
    "actuator/crashes.py": "keeps each model's back-off on the clock (backoff.py is its pure rule)",
    "actuator/static.py": "fixed replicas for tests and benchmarks",
    "actuator/leftovers.py": "finds and kills processes left by a crash",
    "actuator/kubernetes.py": "scales Deployments and watches pods through the Kubernetes API, writes the registry (pods.py is its pure rule)",
    "sim/compare.py": "runs policies in worker processes",
    "sim/replay.py": "the replay command's run: reads the trace, times the run, writes results",
}
"""Modules in CHECKED that do I/O, and what for."""


def _imported(path: Path) -> set[str]:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    return imported


def _checked_modules() -> list[str]:
    paths = []
    for entry in CHECKED:
        found = [PACKAGE / entry] if entry.endswith(".py") else sorted((PACKAGE / entry).rglob("*.py"))
        paths += [str(p.relative_to(PACKAGE)) for p in found]
    return paths


def test_pure_modules_import_no_io_and_read_no_clock():
    impure = {}
    for module in _checked_modules():
        if module in SHELLS:
            continue
        imported = _imported(PACKAGE / module)
        if imported & (FORBIDDEN | {"time"}):
            impure[module] = sorted(imported & (FORBIDDEN | {"time"}))
    assert impure == {}, "a pure module does I/O or reads the clock (time is an argument); if it is a shell, name it in SHELLS"


def test_every_shell_exists_and_does_io():
    checked = set(_checked_modules())
    assert set(SHELLS) <= checked, f"SHELLS names modules that are gone: {sorted(set(SHELLS) - checked)}"
