"""`ebbflow replay`: what ebbflow and the other autoscalers would have done on an operator's trace.

Loads a trace (the one loader), picks the simulator mode and the replica
shape, runs every policy (ebbflow, the swept baselines, static peak, the
oracle), and writes results.json, table.txt and PNG plots.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ebbflow.emulator.service_time import load_profile
from ebbflow.runtime.errors import ConfigError
from ebbflow.scheduler.capacity import CapacityModel, Shape, Slo
from ebbflow.scheduler.measure import measure_curve
from ebbflow.sim.compare import KNOBS, POLICIES, SWEEPS, Comparison, Setup, compare
from ebbflow.sim.des import Fleet
from ebbflow.sim.profile import best_shape, default_shapes
from ebbflow.sim.scenarios import scenario
from ebbflow.sim.workload import Counts, Requests, client_dispersion, counts_from_rates, counts_from_requests, requests_from_trace, scale, token_mix
from ebbflow.traces import load_trace

MAX_DES_REQUESTS = 1_000_000
"""Beyond this many requests `auto` runs the fluid mode: a whole comparison simulates some 45 times the trace's
requests, about 10 minutes per million on two cores (a week of 2.5 M requests took 24 minutes as discrete
events and 1.5 minutes fluid)."""


@dataclass(frozen=True)
class ReplayOptions:
    trace: Path
    policies: tuple[str, ...] = POLICIES
    scale: float = 1.0
    mode: str = "auto"
    slo: Slo = Slo(ttft_s=2.0, tpot_s=0.1, percentile=99.5)
    shape: Shape | None = None
    """None: the shape that meets the SLO at mean demand with the fewest replicas."""
    profile: str = "llama2-7b-a100"
    cold_start_s: float = -1.0
    min_replicas: int = 1
    max_replicas: int = 0
    """0: twice what the busiest bin (10 s) would need, at least 20."""
    slower: float = 0.0
    """The fleet is this much slower than the profile the policies are given (0.15: 15 %)."""
    noise_sigma: float = 0.3
    seed: int = 0
    dev_fraction: float = 0.4
    learn: bool = False
    bin_s: float = 10.0
    time_unit: str = "auto"
    time_column: str | None = None
    prompt_column: str | None = None
    output_column: str | None = None
    scenario: str | None = None
    """A generated scenario (ebbflow.sim.scenarios) instead of the trace file; its requests are drawn with `seed`."""


def parse_shape(text: str) -> Shape | None:
    """'auto' or 'INSTANCESxBATCH', e.g. 2x8."""
    if text == "auto":
        return None
    try:
        instances, batch = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"shape must be 'auto' or INSTANCESxBATCH such as 2x8, got {text!r}") from None
    if not (1 <= instances <= 16 and 1 <= batch <= 1024):
        raise ConfigError(f"shape {text!r}: instances must be 1-16 and batch 1-1024")
    return Shape(instances, batch)


def load_workload(options: ReplayOptions, say: Callable[[str], None] = lambda _: None) -> tuple[Requests | Counts, str]:
    """The trace as simulator input, and the mode it will run in."""
    if options.scenario:
        try:
            chosen = scenario(options.scenario)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        generated = scale(chosen.generate(options.seed), options.scale, seed=options.seed)
        say(f"scenario {chosen.name}: {len(generated):,} requests over {generated.span_s / 3600:.2f} h ({chosen.about})")
        if options.mode == "fluid":
            return counts_from_requests(generated, options.bin_s, seed=options.seed), "fluid"
        return generated, "discrete-event"
    trace = load_trace(options.trace, options.time_column, options.time_unit, options.prompt_column, options.output_column)
    say(trace.describe())
    if trace.kind == "rates":
        if options.mode == "des":
            raise ConfigError(f"{trace.name} holds rates per {trace.rate_step_s:g} s window, not requests: it can only be replayed in fluid mode")
        # Per-client inter-arrival CVs (ServeGen): from the file itself, or the per-client file beside a total.
        clients = options.trace
        if options.trace.name.endswith("_total_rate_10min.csv"):
            clients = options.trace.with_name(options.trace.name.replace("_total_rate_10min.csv", "_clients.csv.gz"))
        try:
            dispersion = client_dispersion(clients) if clients.exists() else None
        except (ValueError, KeyError):  # no client_id / iat_cv columns: Poisson-like variability
            dispersion = None
        return counts_from_rates(trace, options.bin_s, dispersion, options.seed, options.scale), "fluid"
    requests = scale(requests_from_trace(trace), options.scale, seed=options.seed)
    if len(requests) < 100:
        raise ConfigError(f"{trace.name}: {len(requests)} requests after scaling; at least 100 are needed for a meaningful replay")
    too_many = options.mode == "auto" and len(requests) > MAX_DES_REQUESTS
    if too_many:
        say(f"{len(requests):,} requests are over {MAX_DES_REQUESTS:,}: fluid mode (--mode des simulates each one, some 10 minutes per million)")
    if options.mode == "fluid" or too_many:
        return counts_from_requests(requests, options.bin_s, seed=options.seed), "fluid"
    return requests, "discrete-event"


def run_replay(options: ReplayOptions, say: Callable[[str], None] = lambda _: None) -> tuple[Comparison, dict]:
    """Load, choose the shape and bounds, compare every policy; returns the comparison and a JSON-able report."""
    for policy in options.policies:
        if policy not in POLICIES:
            raise ConfigError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    if options.min_replicas < 0 or (options.max_replicas and options.max_replicas < max(1, options.min_replicas)):
        raise ConfigError(f"replica bounds {options.min_replicas}-{options.max_replicas}: need 0 <= min and max >= max(1, min)")
    if options.slower < 0 or options.scale <= 0:
        raise ConfigError("--slower must be >= 0 and --scale > 0")
    started = time.perf_counter()
    data, mode = load_workload(options, say)
    try:
        profile = load_profile(options.profile)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    say(f"{data.name}: {mode} mode, {data.span_s / 3600:.2f} h")
    prompts, outputs = token_mix(data)
    rates = data.rates(60.0)
    mean_rps = float(np.nanmean(rates)) if np.isfinite(rates).any() else 0.0
    peak_rps = float(np.nanmax(rates)) if np.isfinite(rates).any() else 0.0
    fine = data.rates(options.bin_s)
    burst_rps = float(np.nanmax(fine)) if np.isfinite(fine).any() else peak_rps
    shape = options.shape
    shape_counts: dict = {}
    if shape is None:
        say("choosing the replica shape (instances x batch) that meets the SLO with the fewest replicas ...")
        try:
            shape, _, counts = best_shape(profile, default_shapes(), options.slo, mean_rps, prompts, outputs, options.noise_sigma)
        except ValueError as error:
            raise ConfigError(f"{error}; loosen the SLO (--slo-ttft, --slo-tpot, --slo-latency)") from None
        shape_counts = {f"{s.instances}x{s.max_batch}": n for s, n in counts.items()}
        say(f"shape {shape.instances}x{shape.max_batch}")
    max_replicas = options.max_replicas
    if max_replicas <= 0:
        quick = CapacityModel(measure_curve(profile, shape, options.slo, prompts, outputs, noise_sigma=options.noise_sigma, pools=(8,), points=10, requests_per_point=3000))
        max_replicas = max(20, 2 * quick.replicas_for(burst_rps))
    fleet = Fleet(
        profile,
        shape,
        cold_start_s=options.cold_start_s,
        speed_factor=1.0 / (1.0 + options.slower),
        noise_sigma=options.noise_sigma,
        min_replicas=options.min_replicas,
        max_replicas=max_replicas,
        seed=options.seed,
    )
    # Multi-day traces are forecast per 10 min, with a daily season from 3 days on (a day fits the forecaster's
    # 288-step season only at 5 min or more; a week of 10-s bins would cost its Selector some 10 minutes).
    forecast_step = options.bin_s if data.span_s <= 2 * 86400 else 600.0
    season = int(round(86400 / forecast_step)) if data.span_s >= 3 * 86400 and 86400 / forecast_step <= 288 else 0
    chosen = scenario(options.scenario) if options.scenario else None
    if chosen is not None and chosen.season_s:
        season = int(round(chosen.season_s / forecast_step))
    setup = Setup(fleet, options.slo, target=options.slo.target, bin_s=options.bin_s, dev_fraction=options.dev_fraction, season=season, forecast_s=forecast_step, learn=options.learn)
    comparison = compare(data, setup, options.policies, SWEEPS, progress=say)
    report = {
        "trace": f"scenario:{options.scenario}" if options.scenario else str(options.trace),
        "name": data.name,
        "mode": mode,
        "requests": int(len(data)) if isinstance(data, Requests) else int(np.nansum(data.counts)),
        "span_h": round(data.span_s / 3600, 3),
        "mean_rps": round(mean_rps, 3),
        "token_counts": "from the trace" if isinstance(data, Requests) and data.tokens_known else "fixed defaults (the trace has none)",
        "peak_rps_1min": round(peak_rps, 3),
        f"peak_rps_{options.bin_s:g}s": round(burst_rps, 3),
        "scale": options.scale,
        "slo": asdict(options.slo),
        "shape": f"{shape.instances}x{shape.max_batch}",
        "shape_replicas_at_mean": shape_counts,
        "fleet": {
            "profile": profile.name,
            "cold_start_s": fleet.cold_s,
            "min_replicas": fleet.min_replicas,
            "max_replicas": fleet.max_replicas,
            "true_speed_vs_profile": round(fleet.speed_factor, 4),
            "noise_sigma": fleet.noise_sigma,
        },
        "evaluation": f"the last {100 * (1 - options.dev_fraction):.0f} % of the trace; ebbflow tuned on the first {100 * options.dev_fraction:.0f} %",
        "evaluation_from_h": round(comparison.details["split"]["cut_s"] / 3600, 3),
        "evaluation_span_h": round(comparison.details["split"]["evaluation_span_s"] / 3600, 3),
        "evaluation_requests": comparison.details["split"]["evaluation_requests"],
        "target": options.slo.target,
        "tuned": comparison.tuned,
        "results": comparison.rows(),
        "at_target": comparison.at_target(),
        "goals": comparison.goals(tie=chosen.tie if chosen else 0.0),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return comparison, report


def table(report: dict) -> str:
    """The results as a fixed-width table, one row per policy and swept knob; the goals below it.

    Every figure is over the evaluation split, which the header states. The `at target` column marks the
    points reaching the SLO target ("yes") and, per policy, the one its cost is taken from ("cheapest"):
    attainment above the target earns nothing."""
    target = report.get("target", 0.995)
    header = (f"{'policy':<12} {'knob':>24} {'attain %':>9} {'at target':>9} {'GPU-h':>8} {'x oracle':>8} {'x tight':>8} {'TTFT p50':>8} {'TTFT p99':>8} "
              f"{'TPOT p99':>8} {'actions':>7} {'cold':>6}")  # fmt: skip
    evaluation = ""
    if "evaluation_span_h" in report:
        evaluation = (f"; results over the evaluation split: from {report['evaluation_from_h']} h, {report['evaluation_requests']:,} requests "
                      f"over {report['evaluation_span_h']} h")  # fmt: skip
    lines = [
        f"{report['name']}: {report['mode']}, {report['requests']:,} requests over {report['span_h']} h in all, mean {report['mean_rps']} req/s, "
        f"shape {report['shape']}, SLO {Slo(**report['slo']).describe()}{evaluation}",
        header,
        "-" * len(header),
    ]

    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    cheapest: dict[str, dict] = {}
    for row in report["results"]:
        if row["attainment"] >= target and (row["policy"] not in cheapest or row["gpu_hours"] < cheapest[row["policy"]]["gpu_hours"]):
            cheapest[row["policy"]] = row
    for row in report["results"]:
        knob = "" if row["knob"] is None else f"{KNOBS.get(row['policy'], 'replicas')} {row['knob']:g}"
        mark = "cheapest" if cheapest.get(row["policy"]) is row else "yes" if row["attainment"] >= target else "no"
        lines.append(
            f"{row['policy']:<12} {knob:>24} {100 * row['attainment']:>9.3f} {mark:>9} {row['gpu_hours']:>8.2f} {cell(row['vs_oracle'], 2):>8} "
            f"{cell(row.get('vs_oracle_tight'), 2):>8} "
            f"{cell(row['ttft_p50_s'], 2):>8} {cell(row['ttft_p99_s'], 2):>8} {cell(row['tpot_p99_s'], 3):>8} {row['actions']:>7} {row['cold_starts']:>6}"
        )
    lines.append("")
    for goal in report["goals"]:
        verdict = goal.get("verdict") or ("met" if goal.get("met") else "NOT met")
        detail = goal.get("note") or ", ".join(f"{k} {v}" for k, v in goal.items() if k not in ("against", "goal", "met", "verdict"))
        lines.append(f"vs {goal['against']}: {goal['goal']}: {verdict} ({detail})")
    return "\n".join(lines)


COLOURS = {
    "ebbflow": "#d62728",
    "oracle": "#222222",
    "oracle_tight": "#666666",
    "static_peak": "#8c8c8c",
    "hpa": "#1f77b4",
    "kpa": "#2ca02c",
    "ray": "#9467bd",
    "dynamo": "#ff7f0e",
}
"""One colour per policy in every plot; ebbflow's (red) is no baseline's."""


def plot(comparison: Comparison, report: dict, out: Path) -> list[Path]:
    """timeline.png (demand, forecast band, replicas per policy) and frontier.png (SLO misses vs GPU-hours).

    Both cover the evaluation split, on the trace's own clock (hours from its start); legends sit outside
    the axes so they hide no line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    step = comparison.setup.bin_s
    split = comparison.details.get("split", {})
    cut_h = split.get("cut_s", 0.0) / 3600
    eval_h = split.get("evaluation_span_s", len(comparison.demand) * step) / 3600
    target = comparison.setup.target
    label_target = f"{100 * target:g} %"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True)
    demand = comparison.demand
    hours = cut_h + np.arange(len(demand)) * step / 3600
    top.plot(hours, demand, color="black", linewidth=0.9, drawstyle="steps-post", label=f"demand (req/s per {step:g} s)")
    if comparison.forecast is not None:
        f = comparison.forecast
        views = [v for v in f.views if v is not None]
        issued = cut_h + np.array([v.issued_s for v in views]) / 3600
        p50 = np.array([v.quantiles[0.5][0] for v in views])
        p90 = np.array([v.quantiles[0.9][0] for v in views])
        p99 = np.array([v.quantiles[0.99][0] for v in views])
        ahead = f.step_s / 3600
        colour = COLOURS["ebbflow"]
        top.fill_between(issued + ahead, p50, p99, color=colour, alpha=0.15, step="post", label="ebbflow's forecast p50-p99 (one step ahead)")
        top.plot(issued + ahead, p90, color=colour, linewidth=0.8, drawstyle="steps-post", label="ebbflow's forecast p90")
    top.set_ylabel("req/s")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    top.set_title(f"{report['name']}: demand and replicas ({report['mode']}); evaluation split: {cut_h:.3g}-{cut_h + eval_h:.3g} h of {report['span_h']:g} h")
    for policy in ("oracle", "oracle_tight", "ebbflow", *SWEEPS.keys(), "static_peak"):
        shown = comparison.closest(policy)
        if shown is None:
            continue
        series = shown.outcome.replicas
        t = cut_h + np.arange(len(series)) * (step if shown.outcome.weights is not None else 1.0) / 3600
        label = policy if shown.knob is None or policy == "static_peak" else f"{policy} ({KNOBS[policy]} {shown.knob:g})"
        if policy in SWEEPS:
            label += ": cheapest reaching " + label_target if comparison.best(policy) is shown else f": never reaches {label_target}, best shown"
        elif shown.attainment < target:
            label += f": misses {label_target} ({100 * shown.attainment:.2f} %)"
        wide = policy in ("ebbflow", "oracle")
        bottom.plot(t, series, color=COLOURS[policy], linewidth=2.0 if wide else 1.0, linestyle={"oracle": "--", "oracle_tight": ":"}.get(policy, "-"), label=label, drawstyle="steps-post")
    for axis in (top, bottom):
        axis.axvline(cut_h, color="grey", linewidth=0.6, linestyle=":")
    bottom.set_xlim(cut_h, cut_h + eval_h * 1.02)
    bottom.set_xlabel(f"hours into the trace (the evaluation split starts at {cut_h:.3g} h; before it, ebbflow was tuned and nothing is scored)")
    bottom.set_ylabel("replicas holding a GPU")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    fig.tight_layout()
    path = out / "timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # Misses on a log scale: the target (0.5 % of requests) and 100 % attainment are visibly apart.
    floor = 0.01

    def misses(r) -> float:
        return max(floor, 100 * (1 - r.attainment))

    fig, ax = plt.subplots(figsize=(11, 6))
    for policy in SWEEPS:
        points = sorted(comparison.get(policy), key=lambda r: r.gpu_hours)
        if not points:
            continue
        ax.plot([r.gpu_hours for r in points], [misses(r) for r in points], marker="o", color=COLOURS[policy], linewidth=0.8, label=f"{policy} (swept {KNOBS[policy]}; joined by cost)")
        for r in points:
            ax.annotate(f"{r.knob:g}", (r.gpu_hours, misses(r)), textcoords="offset points", xytext=(4, 4), fontsize=7, color=COLOURS[policy])
    for policy, marker in (("ebbflow", "*"), ("oracle", "D"), ("static_peak", "s")):
        for r in comparison.get(policy):
            ax.scatter([r.gpu_hours], [misses(r)], marker=marker, s=220 if marker == "*" else 70, zorder=5, color=COLOURS[policy], label=policy)
    ax.axhline(100 * (1 - target), color="grey", linestyle="--", linewidth=0.8, label=f"target: {label_target} attainment")
    ax.set_yscale("log")
    ticks = [t for t in (0.01, 0.1, 0.5, 1, 5, 10, 50, 100) if t <= max([misses(r) for r in comparison.results] + [1.0]) * 1.5]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_yaxis()
    ax.set_xlabel(f"GPU-hours over the evaluation split ({eval_h:.3g} h)")
    ax.set_ylabel(f"requests missing the SLO, % (log; better is up; {floor:g} % = none)")
    ax.set_title(f"{report['name']}: SLO misses vs GPU-hours, each point labelled with its knob")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    path = out / "frontier.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def write(comparison: Comparison, report: dict, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, default=_json))
    (out / "table.txt").write_text(table(report) + "\n")
    written = [out / "results.json", out / "table.txt"]
    if plots:
        written += plot(comparison, report, out)
    return written


def _json(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if not math.isfinite(value) else float(value)
    raise TypeError(f"not JSON: {type(value)}")


class Progress:
    """A one-line progress display on stderr: steps done of an estimate, and the last message."""

    def __init__(self, total: int, stream=sys.stderr) -> None:
        self.total, self.done, self.stream = max(1, total), 0, stream
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        self.done = min(self.total, self.done + 1)
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.started
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:5.0f}s "
        if len(message) > 70:  # a message that matters whole (what was read) gets its own line above the bar
            self.stream.write(f"\r{message:<{len(bar) + 70}}\n")
            message = message[:67] + "..."
        line = f"\r{bar}{message:<70}"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def expected_steps(policies: tuple[str, ...]) -> int:
    """Roughly how many progress messages a replay prints (for the bar)."""
    steps = 3  # loading, shape, capacity curves
    steps += sum(len(SWEEPS[p]) for p in policies if p in SWEEPS) + ("dynamo" in policies)
    steps += 2 if "ebbflow" in policies else 0
    steps += 12 if {"oracle", "oracle_tight", "static_peak"} & set(policies) else 0
    steps += 6 if "oracle_tight" in policies else 0
    steps += "static_peak" in policies
    return steps
