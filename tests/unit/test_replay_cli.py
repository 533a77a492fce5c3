"""`ebbflow replay` as an operator runs it: a trace file in, a table, JSON and plots out; bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ebbflow.cli import main


def write_trace(path: Path, rate: float = 6.0, span_s: float = 1800.0, seed: int = 3) -> int:
    """A per-request CSV in milliseconds with token columns under unusual names, and a mid-trace surge."""
    rng = np.random.default_rng(seed)
    times = np.sort(np.concatenate([rng.uniform(0, span_s, int(rate * span_s)), rng.uniform(900, 1200, int(rate * 300))]))
    prompts = rng.integers(100, 800, len(times))
    outputs = rng.integers(10, 120, len(times))
    lines = ["arrived_ms,in_tok,out_tok"] + [f"{t * 1000:.1f},{p},{o}" for t, p, o in zip(times, prompts, outputs)]
    path.write_text("\n".join(lines) + "\n")
    return len(times)


@pytest.mark.timeout(300)  # the capacity curves, two oracles and a swept baseline on a 30-minute trace
def test_replay_writes_table_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "surge.csv"
    n = write_trace(trace)
    out = tmp_path / "out"
    code = main([
        "replay", "--trace", str(trace), "--time-column", "arrived_ms", "--time-unit", "ms",
        "--prompt-column", "in_tok", "--output-column", "out_tok",
        "--policy", "ebbflow,hpa", "--policy", "oracle,oracle_tight,static_peak", "--shape", "2x4", "--out", str(out), "--quiet",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ebbflow" in printed and "oracle" in printed and "vs static_peak" in printed
    report = json.loads((out / "results.json").read_text())
    assert report["requests"] == n and report["mode"] == "discrete-event" and report["shape"] == "2x4"
    policies = {row["policy"] for row in report["results"]}
    assert policies == {"ebbflow", "hpa", "oracle", "oracle_tight", "static_peak"}
    assert len([r for r in report["results"] if r["policy"] == "hpa"]) >= 5  # the swept knob
    oracle = next(r for r in report["results"] if r["policy"] == "oracle")
    static = next(r for r in report["results"] if r["policy"] == "static_peak")
    assert oracle["gpu_hours"] < static["gpu_hours"]
    assert oracle["attainment"] >= 0.99
    tight = next(r for r in report["results"] if r["policy"] == "oracle_tight")
    assert tight["gpu_hours"] <= oracle["gpu_hours"] and tight["attainment"] >= 0.995
    assert "vs oracle_tight" in printed and "x tight" in printed
    assert report["tuned"]["forecast_quantile"] in (0.5, 0.9)
    for name in ("table.txt", "timeline.png", "frontier.png"):
        assert (out / name).stat().st_size > 1000


def test_replay_refuses_bad_input_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--trace", str(tmp_path / "missing.csv"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    trace = tmp_path / "t.csv"
    write_trace(trace, span_s=300)
    assert main(["replay", "--trace", str(trace), "--policy", "magic", "--quiet"]) == 2
    assert "unknown policy 'magic'" in capsys.readouterr().err
    assert main(["replay", "--trace", str(trace), "--shape", "big", "--quiet"]) == 2
    assert "INSTANCESxBATCH" in capsys.readouterr().err
    assert main(["replay", "--trace", str(trace), "--slo-ttft", "0", "--slo-tpot", "0", "--quiet"]) == 2
    assert "invalid SLO" in capsys.readouterr().err
    assert main(["replay", "--trace", str(trace), "--quiet"]) == 2
    assert "no arrival time column found" in capsys.readouterr().err  # arrived_ms is not a usual name
    base = ["replay", "--trace", str(trace), "--time-column", "arrived_ms", "--time-unit", "ms", "--quiet"]
    assert main([*base, "--profile", "h100-imaginary"]) == 2
    assert "unknown latency profile" in capsys.readouterr().err
    assert main([*base, "--min-replicas", "5", "--max-replicas", "2"]) == 2
    assert "replica bounds" in capsys.readouterr().err
    assert main([*base, "--slo-ttft", "0.001", "--slo-tpot", "0"]) == 2
    assert "no shape meets the SLO" in capsys.readouterr().err
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("timestamp\n0\n1\n2\n")
    assert main(["replay", "--trace", str(tiny), "--quiet"]) == 2
    assert "at least 100" in capsys.readouterr().err


def test_scenarios_are_written_and_replayed_with_their_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario"]) == 0
    assert "on_off" in capsys.readouterr().out
    assert main(["scenario", "spike", "--out", str(tmp_path / "spike.csv")]) == 0
    assert (tmp_path / "spike.csv").read_text().startswith("arrival_s,prompt_tokens,output_tokens")
    assert main(["scenario", "nope"]) == 2
    assert "unknown scenario 'nope'" in capsys.readouterr().err
    assert main(["replay", "--quiet"]) == 2
    assert "--trace FILE or --scenario NAME" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["replay", "--scenario", "on_off", "--policy", "kpa", "--out", str(out), "--quiet", "--no-plots"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["trace"] == "scenario:on_off" and report["shape"] == "4x2" and report["fleet"]["min_replicas"] == 0
    assert report["slo"]["ttft_s"] == 2.0
    assert report["evaluation_requests"] < report["requests"]  # the header's figures are the evaluation split's
    assert min(min(r["gpu_hours"] for r in report["results"]), 1) > 0
    assert "results over the evaluation split" in capsys.readouterr().out


def test_the_replay_help_names_every_policy(capsys: pytest.CaptureFixture[str]) -> None:
    from ebbflow.sim.compare import POLICIES

    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    printed = "".join(capsys.readouterr().out.split())  # argparse wraps, even inside a long word
    assert f"(default:allof{','.join(POLICIES)})" in printed
