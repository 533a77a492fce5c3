"""Autoscaling policies on real traces: ebbflow against swept HPA, KPA, Ray Serve and a Dynamo-like
planner, static peak and a clairvoyant oracle, in the trace-driven simulator (ebbflow.sim).

Runs, for every trace found under --traces (default ../shared/traces) and each --trace FILE:
- per-request traces (Azure LLM 2023 code and conversation): discrete-event mode, at native rate and
  scaled so mean demand needs about 10-30 replicas (--scale-conv, --scale-code; other per-request traces
  use --scale), plus a sensitivity run where the fleet is 15 % slower than the profile the policies get;
  the SLO is p99.5 TTFT <= 2 s and TPOT <= 0.1 s, with TTFT <= 5 s for code (--slo-ttft-code: its
  sub-second bursts of hundreds of requests cannot start within 2 s on any fleet a cold start allows);
- rate traces (ServeGen language models, 14 days of 10-min windows): fluid mode, at native rate;
- a mode check: the same controllers in both modes on the conversation trace (GPU-hours and attainment);
- the generated scenarios (ebbflow.sim.scenarios: step, step up/down, spike, ramp, daily, on/off to zero,
  long-prompt shift), discrete-event, each at its own shape and SLO, with the issue's goals checked per
  scenario (--scenarios-only runs just these; --no-scenarios skips them).

Every policy is compared at the SLO target: a policy's cost is its cheapest swept point reaching it, and
ebbflow must reach it itself.

Each run writes results.json, table.txt, timeline.png and frontier.png under --out/<run>. Prints one
JSON line (all runs), then the tables. Speeds are wall-clock on this machine, measured in the same run.

    .venv/bin/python benchmarks/policy_benchmark.py [--traces ../shared/traces] [--only conv] [--out /tmp/policy]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ebbflow.emulator.service_time import load_profile
from ebbflow.sim.baselines.hpa import Hpa
from ebbflow.sim.baselines.kpa import Kpa
from ebbflow.sim.baselines.ray import RayServe
from ebbflow.sim.control import Schedule
from ebbflow.sim.des import Fleet, simulate
from ebbflow.sim.fluid import simulate_fluid
from ebbflow.sim.profile import capacity_model
from ebbflow.sim.replay import ReplayOptions, parse_shape, run_replay, table, write
from ebbflow.sim.scenarios import SCENARIOS
from ebbflow.sim.workload import Counts, requests_from_trace
from ebbflow.traces import load_trace, trace_files

ROOT = Path(__file__).resolve().parent.parent


def mode_check(path: Path, shape_text: str, out: dict) -> None:
    """The same controllers in both simulator modes on one per-request trace."""
    options = ReplayOptions(path)
    requests = requests_from_trace(load_trace(path))
    profile = load_profile(options.profile)
    shape = parse_shape(shape_text)
    fleet = Fleet(profile, shape, min_replicas=1, max_replicas=200)
    truth = capacity_model(profile, shape, replace(options.slo, percentile=99.5), requests.prompts, requests.outputs)
    initial = truth.replicas_for(float(requests.rates(60.0)[0]))
    rows = []
    for step in (1.0, 10.0):
        counts = Counts(requests.name, step, requests.counts(step))
        for name, make in (
            ("static (mean need)", lambda: Schedule("static", np.array([initial]), 1e9)),
            ("hpa 3", lambda: Hpa(3)),
            ("kpa 3", lambda: Kpa(3)),
            ("ray 3", lambda: RayServe(3)),
        ):
            des = simulate(requests, fleet, make(), initial=initial, warmup_s=60, slo=options.slo)
            fluid = simulate_fluid(counts, fleet, truth, make(), initial=initial, warmup_s=60)
            rows.append({
                "bin_s": step,
                "controller": name,
                "des_gpu_hours": round(des.gpu_s / 3600, 3),
                "fluid_gpu_hours": round(fluid.gpu_s / 3600, 3),
                "gpu_hours_diff_pct": round(100 * (fluid.gpu_s / des.gpu_s - 1), 2),
                "des_attainment": round(des.attainment(options.slo), 5),
                "fluid_attainment": round(fluid.attainment(options.slo), 5),
                "attainment_diff_points": round(100 * (fluid.attainment(options.slo) - des.attainment(options.slo)), 2),
            })
    out["mode_check"] = {"trace": requests.name, "shape": shape_text, "rows": rows}


def scenario_goals(result: dict, name: str) -> dict[str, bool]:
    """The issue's goals for one scenario run (tests/unit/test_scenarios.py asserts the same)."""
    goals = {g["against"]: g for g in result["goals"]}
    oracle = goals["oracle"]
    out = {
        "attainment": oracle["ebbflow_attainment"] >= 0.995,
        "vs_oracle_1.3": bool(oracle["met_1.3"]),
    }
    for baseline in ("hpa", "kpa", "ray"):
        if baseline in goals and goals[baseline]["met"] is not None:  # None: it never reaches 99.5 %, nothing to beat
            out[f"vs_{baseline}"] = bool(goals[baseline]["met"])
    if name == "step":
        out["peak_1.2"] = oracle["peak_ratio"] is not None and oracle["peak_ratio"] <= 1.2
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_traces = ROOT.parent / "shared" / "traces"
    parser.add_argument("--traces", type=Path, default=default_traces if default_traces.exists() else None)
    parser.add_argument("--trace", type=Path, action="append", default=[], help="an extra trace file (repeatable)")
    parser.add_argument("--only", help="only traces whose name contains this")
    parser.add_argument("--scale", type=float, default=1.0, help="rate factor for other per-request traces")
    parser.add_argument("--scale-conv", type=float, default=2.0, help="Azure conversation: mean demand ~20 replicas")
    parser.add_argument("--scale-code", type=float, default=10.0, help="Azure code: mean demand ~10 replicas, bursts far above")
    parser.add_argument("--slo-ttft-code", type=float, default=5.0, help="TTFT objective for code traces, s (2 s is out of reach in their sub-second bursts)")
    parser.add_argument("--no-native", action="store_true", help="skip the native-rate runs of scaled traces")
    parser.add_argument("--no-sensitivity", action="store_true")
    parser.add_argument("--scenarios-only", action="store_true", help="run only the generated scenarios")
    parser.add_argument("--no-scenarios", action="store_true", help="skip the generated scenarios")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ebbflow-policy-benchmark"))
    args = parser.parse_args()

    files = list(args.trace)
    if args.traces and not args.scenarios_only:
        # Per-request traces, and of the rate traces the 14-day ServeGen language models.
        files += [p for p in trace_files(args.traces) if load_trace(p).kind == "requests" or "language" in p.name]
    if args.only:
        files = [p for p in files if args.only in p.name]
    scenarios = [] if args.no_scenarios else [s for s in SCENARIOS.values() if not args.only or args.only in s.name]
    if not files and not scenarios:
        print("no traces: pass --traces DIR or --trace FILE", file=sys.stderr)
        return 2

    runs: list[tuple[str, ReplayOptions]] = []
    for path in files:
        name = path.name.lower()
        options = ReplayOptions(path)
        kind = load_trace(path).kind
        if kind == "rates":
            runs.append((path.stem.replace("_total_rate_10min", ""), options))
            continue
        factor = args.scale_conv if "conv" in name else args.scale_code if "code" in name else args.scale
        if "code" in name:
            options = replace(options, slo=replace(options.slo, ttft_s=args.slo_ttft_code))
        runs.append((f"{path.stem}_x{factor:g}", replace(options, scale=factor)))
        if factor != 1 and not args.no_native:
            runs.append((f"{path.stem}_native", options))
        if "conv" in name and not args.no_sensitivity:
            runs.append((f"{path.stem}_x{factor:g}_slower15", replace(options, scale=factor, slower=0.15)))

    for s in scenarios:
        options = ReplayOptions(Path(s.name), scenario=s.name, shape=s.shape, slo=s.slo, min_replicas=s.min_replicas)
        runs.append((f"scenario_{s.name}", options))

    report: dict = {"benchmark": "policy", "runs": {}}
    texts = []
    timing: dict[str, float] = {}
    for label, options in runs:
        started = time.perf_counter()
        print(f"== {label}", file=sys.stderr, flush=True)
        comparison, result = run_replay(options, lambda m: print(f"   {time.perf_counter() - started:6.1f}s {m}", file=sys.stderr, flush=True))
        seconds = time.perf_counter() - started
        write(comparison, result, args.out / label)
        timing[label] = round(seconds, 1)
        report["runs"][label] = {
            "mode": result["mode"],
            "shape": result["shape"],
            "scale": result["scale"],
            "slower": options.slower,
            "tuned": {k: v for k, v in result["tuned"].items() if k != "grid"},
            "results": result["results"],
            "at_target": result["at_target"],
            "goals": result["goals"],
            "seconds": round(seconds, 1),
        }
        if options.scenario:
            report["runs"][label]["scenario_goals"] = scenario_goals(result, SCENARIOS[options.scenario].name)
        texts.append(f"== {label} ({seconds:.0f} s)\n" + table(result))
    hour_runs = [v for k, v in timing.items() if "azure" in k and "slower" not in k]
    servegen = [v for k, v in timing.items() if "servegen" in k]
    report["timing_s"] = {
        "per_run": timing,
        "one_hour_azure_all_policies_max": max(hour_runs) if hour_runs else None,
        "servegen_fluid_total": round(sum(servegen), 1) if servegen else None,
    }
    conv = next((p for p in files if "conv" in p.name.lower() and load_trace(p).kind == "requests"), None)
    if conv is not None:
        shape = next((r["shape"] for k, r in report["runs"].items() if "conv" in k), "4x1")
        mode_check(conv, shape, report)
    print(json.dumps(report, default=float))
    print()
    print("\n\n".join(texts))
    if "mode_check" in report:
        print(f"\nmode check on {report['mode_check']['trace']} (shape {report['mode_check']['shape']}): fluid vs discrete-event")
        print(f"{'bin':>5} {'controller':<20} {'DES GPU-h':>10} {'fluid GPU-h':>11} {'diff %':>7} {'DES att %':>10} {'fluid att %':>11} {'diff pts':>8}")
        for row in report["mode_check"]["rows"]:
            print(
                f"{row['bin_s']:>5g} {row['controller']:<20} {row['des_gpu_hours']:>10.2f} {row['fluid_gpu_hours']:>11.2f} {row['gpu_hours_diff_pct']:>7.2f} "
                f"{100 * row['des_attainment']:>10.3f} {100 * row['fluid_attainment']:>11.3f} {row['attainment_diff_points']:>8.2f}"
            )
    checked = {k: v["scenario_goals"] for k, v in report["runs"].items() if "scenario_goals" in v}
    if checked:
        print("\nscenario goals (>= 99.5 % attainment, <= 1.3x the oracle's GPU-hours, <= the cheapest HPA/KPA/Ray point reaching 99.5 %; step: peak <= 1.2x the oracle's)")
        for label, goals in checked.items():
            print(f"{label:<24} " + "; ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in goals.items()))
    print(f"\ntiming: {json.dumps(report['timing_s'])}")
    print(f"plots and per-run JSON under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
