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


FORBIDDEN = {"asyncio", "grpc", "nats", "prometheus_client", "opentelemetry", "aiohttp"}
CORES = ["router/core.py", "collector/core.py", "scheduler/core.py", "scheduler/load_window.py", "actuator/core.py", "actuator/backoff.py", "emulator/service_time.py"]


def test_cores_import_no_io_frameworks():
    for core in CORES:
        tree = ast.parse((ROOT / "services" / "ebbflow" / core).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & FORBIDDEN, f"{core} imports {imported & FORBIDDEN}"
        assert "time" not in imported, f"{core} reads the clock; time must be an argument"
