"""deploy/grafana: the typed dashboards pass `tsc --noEmit --strict` against npm @grafana/schema, the check does catch
a wrong field or enum value, and the committed JSON is exactly what the sources build (`make dashboards`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
TOOLS = ROOT / ".tools"
TSC = TOOLS / "node_modules" / ".bin" / "tsc"
SOURCES = sorted(p for p in GRAFANA.glob("*.ts") if p.name != "lib.ts")


def tsc() -> str:
    assert TSC.exists() and (TOOLS / "node_modules" / "@grafana" / "schema").exists(), (
        "typescript and @grafana/schema are not installed in .tools: run `make test` (or npm install --prefix .tools typescript@5 @grafana/schema@11)"
    )
    return str(TSC)


def test_the_dashboards_type_check_against_grafana_schema() -> None:
    result = subprocess.run([tsc(), "-p", str(GRAFANA), "--noEmit", "--strict"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_type_check_rejects_an_unknown_field_and_a_bad_enum_value() -> None:
    with tempfile.TemporaryDirectory(dir=TOOLS) as scratch:
        (Path(scratch) / "bad.ts").write_text(
            "import type { Panel } from '@grafana/schema';\n"
            "import type { Options } from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';\n"
            "export const p: Panel = { type: 'timeseries', gridPos: { x: 0, y: 0, w: 12, h: 8 }, colour: 'red' };\n"
            "export const o: Options = { legend: { displayMode: 'lists', placement: 'bottom', showLegend: true, calcs: [] }, tooltip: { mode: 'multi', sort: 'none' } };\n"
        )
        (Path(scratch) / "tsconfig.json").write_text(
            json.dumps({"extends": str(GRAFANA / "tsconfig.json"), "compilerOptions": {"rootDir": ".", "baseUrl": str(GRAFANA)}, "include": ["*.ts"]})
        )
        result = subprocess.run([tsc(), "-p", scratch, "--noEmit", "--strict"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "'colour' does not exist in type 'Panel" in result.stdout, result.stdout
    assert "'\"lists\"' is not assignable to type 'LegendDisplayMode'" in result.stdout, result.stdout


def test_the_committed_json_is_what_the_typed_sources_build(tmp_path: Path) -> None:
    tsc()
    node = shutil.which("node")
    assert node, "node is not installed"
    result = subprocess.run([node, str(GRAFANA / "build.cjs"), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    built = sorted(p.name for p in tmp_path.glob("*.json"))
    assert built == sorted(p.stem + ".json" for p in SOURCES)
    for name in built:
        assert (GRAFANA / name).read_text() == (tmp_path / name).read_text(), f"deploy/grafana/{name} is stale: run `make dashboards`"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_panel_says_what_it_shows_and_queries_prometheus(source: Path) -> None:
    dashboard = json.loads(source.with_suffix(".json").read_text())
    assert dashboard["uid"].startswith("ebbflow-") and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"{source.stem}: duplicate panel ids"
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["description"] and panel["targets"], panel.get("title")
        assert all(target["expr"] and target["datasource"]["type"] == "prometheus" for target in panel["targets"]), panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    uses_model = "$model" in source.with_suffix(".json").read_text()
    assert ("model" in variables) == uses_model, f"{source.stem}: the `model` variable and its use must go together"
