"""Forecast accuracy and calibration on real LLM traces: the selector against each single model.

Series: every trace file under --traces (default ../shared/traces) and each
--trace FILE, read by ebbflow.traces (CSV or JSON Lines; datetimes or
numbers; ServeGen rate files):
- per-request traces (e.g. Azure LLM 2023 code and conversation): arrivals
  counted in 10 s bins (req/s), horizons 30, 60, 120 s (3, 6, 12 steps);
- rate traces (e.g. ServeGen: total req/s per 10-min window), horizons 1, 3,
  6, 12 windows (10 min to 2 h), with a daily season (144 windows) when the
  trace holds 3 days; all-zero windows are collection gaps, so they are
  missing, not zero.

Every series is replayed step by step through the forecaster's own Selector
(the code the service runs). Each candidate model carries the same online
conformal layer, so the single-model baselines below are "the model plus our
calibration"; the `selected` row is what the forecaster publishes (model
chosen by rolling-origin pinball loss). Scoring starts after a warm-up; every
forecast is scored against data it never saw.

Reported per series, horizon and method: MAE relative to the series mean,
pinball loss at p50 and p90 (relative to the mean), p90 coverage with a 95 %
Wilson interval, and the time of one forecaster update (all candidates
updated and predicting; refits reported apart). Prints one JSON line, then
readable tables.

    .venv/bin/python benchmarks/forecast_accuracy.py [--traces ../shared/traces] [--trace my.csv --time-unit ms]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebbflow.forecaster.backtest import replay, score_replay
from ebbflow.forecaster.selection import Selector, default_models
from ebbflow.traces import Trace, load_trace, trace_files

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRACES = ROOT.parent / "shared" / "traces"
SIMPLE = ("last_value", "ewma")  # and every moving_average_<steps>


@dataclass(frozen=True)
class Series:
    name: str
    values: np.ndarray
    step_s: float
    horizons: tuple[int, ...]  # in steps
    season: int
    ma_windows: tuple[int, ...]
    warmup: int
    refit_every: int
    bursty: bool  # goal (b) applies


def series_of(trace: Trace) -> Series:
    """Benchmark settings for a trace: per-request traces at 10 s bins, rate traces at their own window."""
    if trace.kind == "requests":
        values = trace.binned(10.0)
        bursty = float(np.std(values) / max(np.mean(values), 1e-9)) > 1.0  # CV of 10-s rates
        return Series(trace.name, values, 10.0, (3, 6, 12), 0, (6, 30, 90), min(90, len(values) // 3), refit_schedule(values, 30), bursty)
    step = trace.rate_step_s
    values = trace.binned(step)
    day = 86400.0 / step
    season = int(day) if day.is_integer() and day <= 288 and len(values) >= 3 * day else 0
    return Series(trace.name, values, step, (1, 3, 6, 12), season, (1, 3, 6), min(144, len(values) // 3), refit_schedule(values, 36), True)


def refit_schedule(values: np.ndarray, least: int) -> int:
    """Refits sized to the series: every `least` steps, but at most about 200 over the whole series (a refit of
    every model costs some 100 ms; two days of 10 s bins refitted every 30 steps spent 5 of 6.5 minutes there)."""
    return max(least, len(values) // 200)


def load_series(traces: Path | None, files: list[Path], time_column: str | None, time_unit: str) -> list[Series]:
    paths = (trace_files(traces) if traces else []) + files
    found = []
    for path in paths:
        trace = load_trace(path, time_column=time_column, time_unit=time_unit)
        print(f"read {trace.describe()}", file=sys.stderr)
        series = series_of(trace)
        if len(series.values) - series.warmup < 2 * max(series.horizons) + 10:
            print(f"skipping {trace.name}: {len(series.values)} steps of {series.step_s:g} s are too few to score", file=sys.stderr)
            continue
        found.append(series)
    return found


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def replay_series(series: Series, window: int) -> tuple[list[dict], dict]:
    """Feed the series through the forecaster's Selector; score every method on the same targets; time the updates."""
    horizon = max(series.horizons)
    selector = Selector(
        horizon=horizon,
        season=series.season,
        max_history=2000,
        refit_every=series.refit_every,
        window=window,
        models=lambda: default_models(horizon, series.season, 2000, series.ma_windows),
    )
    forecasts, timings = replay(selector, series.values, clock=time.perf_counter)
    updates = [seconds for seconds, refit in timings if not refit]
    refits = [seconds for seconds, refit in timings if refit]
    timing = {
        "update_ms_p50": float(np.median(updates) * 1e3) if updates else math.nan,
        "update_ms_p99": float(np.percentile(updates, 99) * 1e3) if updates else math.nan,
        "refit_ms_mean": float(np.mean(refits) * 1e3) if refits else math.nan,
        "amortized_ms": float(sum(seconds for seconds, _ in timings) / len(timings) * 1e3),
        "refits": len(refits),
    }
    rows = []
    for score in score_replay(series.values, forecasts, series.horizons, series.warmup):
        low, high = wilson(round(score.coverage_p90 * score.scored), score.scored) if score.scored else (math.nan, math.nan)
        rows.append(
            {
                "series": series.name,
                "horizon_steps": score.horizon,
                "horizon_s": score.horizon * series.step_s,
                "method": score.method,
                "n": score.scored,
                "rel_mae": score.relative_mae,
                "pinball_p50": score.pinball_p50,
                "pinball_p90": score.pinball_p90,
                "coverage_p90": score.coverage_p90,
                "coverage_p90_low": low,
                "coverage_p90_high": high,
            }
        )
    return rows, timing


def goals(rows: list[dict], series: list[Series]) -> dict:
    """The issue's goals, checked per series and horizon."""
    out: dict = {"selection_never_loses": [], "beats_simple_by_10pct": [], "p90_pinball_10pct_below_arima": []}
    bursty = {s.name for s in series if s.bursty}
    keys = sorted({(r["series"], r["horizon_steps"]) for r in rows})
    for key in keys:
        group = {r["method"]: r for r in rows if (r["series"], r["horizon_steps"]) == key and r["n"]}  # n = 0: not enough history
        if "selected" not in group:
            continue
        selected = group["selected"]
        singles = {m: r for m, r in group.items() if m != "selected"}
        best = min(singles.values(), key=lambda r: r["rel_mae"])
        out["selection_never_loses"].append({"series": key[0], "h": key[1], "ratio_to_best": selected["rel_mae"] / best["rel_mae"], "best": best["method"]})
        if key[0] in bursty:
            simple = min((r for m, r in singles.items() if m in SIMPLE or m.startswith("moving_average")), key=lambda r: r["rel_mae"])
            out["beats_simple_by_10pct"].append({"series": key[0], "h": key[1], "ratio": selected["rel_mae"] / simple["rel_mae"], "simple": simple["method"]})
            if "arima" in singles:
                out["p90_pinball_10pct_below_arima"].append({"series": key[0], "h": key[1], "ratio": selected["pinball_p90"] / singles["arima"]["pinball_p90"]})
    rate_names = {s.name for s in series if s.step_s >= 60}
    pooled = [r for r in rows if r["method"] == "selected" and r["series"] in rate_names and r["n"]]
    hits = sum(r["coverage_p90"] * r["n"] for r in pooled)
    total = sum(r["n"] for r in pooled)
    out["rate_traces_pooled_coverage_p90"] = {"coverage": hits / total if total else math.nan, "wilson": wilson(round(hits), total)}
    out["request_traces_coverage_p90"] = [
        {"series": r["series"], "h": r["horizon_steps"], "coverage": r["coverage_p90"]} for r in rows if r["method"] == "selected" and r["series"] not in rate_names
    ]
    return out


def tables(report: dict) -> str:
    lines = []
    for series in report["series"]:
        lines.append(f"\n{series['name']} ({series['steps']} steps of {series['step_s']:g} s; update p50 {series['timing']['update_ms_p50']:.2f} ms, "
                     f"p99 {series['timing']['update_ms_p99']:.2f} ms, refit {series['timing']['refit_ms_mean']:.0f} ms x{series['timing']['refits']})")
        lines.append(f"  {'horizon':>8} {'method':<18} {'relMAE':>7} {'pin50':>7} {'pin90':>7} {'cov90':>6} {'(95% CI)':>13} {'n':>5}")
        for r in [r for r in report["rows"] if r["series"] == series["name"]]:
            lines.append(
                f"  {r['horizon_s']:>7g}s {r['method']:<18} {r['rel_mae']:7.3f} {r['pinball_p50']:7.3f} {r['pinball_p90']:7.3f} {r['coverage_p90']:6.3f} "
                f"({r['coverage_p90_low']:.2f}-{r['coverage_p90_high']:.2f}) {r['n']:5d}"
            )
    g = report["goals"]
    lines.append("\nGoals")
    worst = max(g["selection_never_loses"], key=lambda r: r["ratio_to_best"])
    lines.append(f"  (a) selected MAE / best single in hindsight: worst {worst['ratio_to_best']:.3f} ({worst['series']}, h={worst['h']}, best {worst['best']}); "
                 f"<= 1.02 on {sum(r['ratio_to_best'] <= 1.02 for r in g['selection_never_loses'])}/{len(g['selection_never_loses'])}")
    for r in g["beats_simple_by_10pct"]:
        lines.append(f"  (b) {r['series']:<18} h={r['h']:>2}: MAE / best simple ({r['simple']}) = {r['ratio']:.3f}")
    for r in g["p90_pinball_10pct_below_arima"]:
        lines.append(f"  (b) {r['series']:<18} h={r['h']:>2}: p90 pinball / ARIMA = {r['ratio']:.3f}")
    pooled = g["rate_traces_pooled_coverage_p90"]
    lines.append(f"  (c) rate traces (e.g. ServeGen) pooled p90 coverage {pooled['coverage']:.3f} (95% CI {pooled['wilson'][0]:.3f}-{pooled['wilson'][1]:.3f})")
    for r in g["request_traces_coverage_p90"]:
        lines.append(f"  (c) {r['series']} h={r['h']}: p90 coverage {r['coverage']:.3f}")
    return "\n".join(lines)


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """--traces, --trace, --time-column, --time-unit, --only: which series to read (shared with forecast_headroom.py)."""
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES if DEFAULT_TRACES.exists() else None, help="folder of trace files (default: ../shared/traces)")
    parser.add_argument("--trace", type=Path, action="append", default=[], help="one more trace file (repeatable)")
    parser.add_argument("--time-column", help="arrival-time column of per-request traces (default: detected)")
    parser.add_argument("--time-unit", default="auto", choices=("auto", "s", "ms", "us", "ns"), help="unit of numeric arrival times")
    parser.add_argument("--only", nargs="*", help="only the series whose names contain one of these")


def selected_series(args: argparse.Namespace) -> list[Series]:
    """The series the trace arguments name; exits with a message when there are none."""
    if args.trace and args.traces == DEFAULT_TRACES:
        args.traces = None  # explicit files only
    if args.traces is None and not args.trace:
        sys.exit("no traces: pass --traces DIR or --trace FILE")
    found = [s for s in load_series(args.traces, args.trace, args.time_column, args.time_unit) if not args.only or any(part in s.name for part in args.only)]
    if not found:
        sys.exit("no usable trace found")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_trace_arguments(parser)
    parser.add_argument("--window", type=int, default=60, help="selection window in steps (the forecaster's selection_window_steps)")
    args = parser.parse_args()
    all_series = selected_series(args)
    rows, summaries = [], []
    for series in all_series:
        print(f"replaying {series.name} ({len(series.values)} steps of {series.step_s:g} s)...", file=sys.stderr)
        series_rows, timing = replay_series(series, args.window)
        rows += series_rows
        summaries.append({"name": series.name, "steps": len(series.values), "step_s": series.step_s, "timing": timing})
    report = {"benchmark": "forecast_accuracy", "window": args.window, "series": summaries, "rows": rows, "goals": goals(rows, all_series)}
    print(json.dumps(report))
    print(tables(report))


if __name__ == "__main__":
    main()
