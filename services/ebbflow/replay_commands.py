"""`ebbflow replay` and `ebbflow scenario`: what-if runs of the simulator, and a trace driven through a live stack.

Their many flags are the simulator's options; the commands that ask a running stack are in cli.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ebbflow.runtime.errors import ConfigError
from ebbflow.up import say


def cmd_replay_live(args: argparse.Namespace) -> int:
    from ebbflow.live_replay import LiveReplayOptions, run_live_replay
    from ebbflow.sim.live import table

    options = LiveReplayOptions(
        trace=Path(args.trace),
        state_dir=Path(args.state_dir),
        speedup=args.speedup,
        model=args.model,
        router=args.router or "",
        config=Path(args.config) if args.config else None,
        time_scale=args.time_scale or 0.0,
        profile=args.profile,
        slo_latency_s=args.slo_latency,
        tail_s=args.tail_s,
        tolerance=args.tolerance,
        time_unit=args.time_unit,
        time_column=args.time_column,
        prompt_column=args.prompt_column,
        output_column=args.output_column,
    )
    out = Path(args.out) if args.out else Path(f"replay-live-{Path(args.trace).stem}")
    report = run_live_replay(options, out, plots=not args.no_plots, say=lambda line: say(line, sys.stderr))
    print(table(report))
    print(json.dumps({k: v for k, v in report.items() if k not in ("live", "simulated")} | {side: {k: v for k, v in report[side].items() if k != "changes"} for side in ("live", "simulated")}))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    if args.live:
        return cmd_replay_live(args)
    from ebbflow.scheduler.capacity import Slo
    from ebbflow.sim.compare import POLICIES
    from ebbflow.sim.replay import Progress, ReplayOptions, expected_steps, parse_shape, run_replay, table, write
    from ebbflow.sim.scenarios import scenario

    if bool(args.trace) == bool(args.scenario):
        raise ConfigError("give one of --trace FILE or --scenario NAME")
    chosen = None
    if args.scenario:
        try:
            chosen = scenario(args.scenario)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        # A scenario brings its own shape, SLO and replica floor; flags given explicitly still win.
        args.shape = f"{chosen.shape.instances}x{chosen.shape.max_batch}" if args.shape == "auto" else args.shape
        args.slo_ttft = chosen.slo.ttft_s if args.slo_ttft is None else args.slo_ttft
        args.min_replicas = chosen.min_replicas if args.min_replicas is None else args.min_replicas
    args.slo_ttft = 2.0 if args.slo_ttft is None else args.slo_ttft
    args.min_replicas = 1 if args.min_replicas is None else args.min_replicas
    policies = tuple(p.strip() for item in (args.policy or []) for p in item.split(",") if p.strip()) or POLICIES
    try:
        slo = Slo(ttft_s=args.slo_ttft, tpot_s=args.slo_tpot, latency_s=args.slo_latency, percentile=args.slo_target)
    except ValueError as error:
        raise ConfigError(f"invalid SLO: {error}") from None
    if args.scale <= 0:
        raise ConfigError(f"--scale must be > 0, got {args.scale}")
    if not 0.1 <= args.dev_fraction <= 0.9:
        raise ConfigError(f"--dev-fraction must be in [0.1, 0.9], got {args.dev_fraction}")
    options = ReplayOptions(
        trace=Path(args.trace or args.scenario),
        scenario=args.scenario,
        policies=policies,
        scale=args.scale,
        mode=args.mode,
        slo=slo,
        shape=parse_shape(args.shape),
        profile=args.profile,
        cold_start_s=args.cold_start_s,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        slower=args.slower,
        seed=args.seed,
        dev_fraction=args.dev_fraction,
        time_unit=args.time_unit,
        time_column=args.time_column,
        prompt_column=args.prompt_column,
        output_column=args.output_column,
    )
    progress = Progress(expected_steps(policies)) if not args.quiet else (lambda _: None)
    try:
        comparison, report = run_replay(options, progress)
    finally:
        if isinstance(progress, Progress):
            progress.close()
    out = Path(args.out) if args.out else Path(f"replay-{report['name']}")
    written = write(comparison, report, out, plots=not args.no_plots)
    print(table(report))
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_scenario(args: argparse.Namespace) -> int:
    from ebbflow.sim.scenarios import SCENARIOS, scenario, write_csv

    if not args.name:
        for s in SCENARIOS.values():
            print(f"{s.name:<12} {s.about}; shape {s.shape.instances}x{s.shape.max_batch}, {s.slo.describe()}, min_replicas {s.min_replicas}")
        return 0
    try:
        chosen = scenario(args.name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    requests = chosen.generate(args.seed)
    path = write_csv(requests, Path(args.out or f"{chosen.name}.csv"))
    print(f"wrote {path}: {len(requests):,} requests over {requests.span_s / 60:.0f} min ({chosen.about})")
    print(f"replay it with its settings: ebbflow replay --scenario {chosen.name}" + (f" --seed {args.seed}" if args.seed else ""))
    return 0


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", state_dir: Path) -> None:
    """Add `replay` and `scenario` to the command line's subcommands."""
    replay = sub.add_parser(
        "replay",
        help="what-if: simulate ebbflow, HPA, KPA, Ray Serve, a Dynamo-like planner, static peak and a clairvoyant oracle on a trace",
    )
    replay.add_argument("--trace", help="CSV or JSON Lines: one row per request (arrival time, optional token counts) or rates per window")
    replay.add_argument("--scenario", help="a generated scenario instead of a trace (`ebbflow scenario` lists them)")
    replay.add_argument("--policy", action="append", help="policies to run, repeatable or comma-separated (default: all of ebbflow,hpa,kpa,ray,dynamo,static_peak,oracle,oracle_tight)")
    replay.add_argument("--scale", type=float, default=1.0, help="multiply the trace's request rate by this (default: %(default)s)")
    replay.add_argument("--mode", choices=("auto", "des", "fluid"), default="auto", help="per-request discrete-event or fluid (default: auto, by trace kind and size)")
    replay.add_argument("--slo-ttft", type=float, default=None, help="time-to-first-token objective, s (0: none; default: 2, or the scenario's)")
    replay.add_argument("--slo-tpot", type=float, default=0.1, help="time-per-output-token objective, s (0: none; default: %(default)s)")
    replay.add_argument("--slo-latency", type=float, default=0.0, help="end-to-end latency objective, s (0: none; default: %(default)s)")
    replay.add_argument("--slo-target", type=float, default=99.5, help="percent of requests that must meet it (default: %(default)s)")
    replay.add_argument("--shape", default="auto", help="replica shape INSTANCESxBATCH, e.g. 2x8 (default: auto, the fewest replicas for the SLO)")
    replay.add_argument("--profile", default="llama2-7b-a100", help="latency profile of the emulated model (default: %(default)s)")
    replay.add_argument("--cold-start-s", type=float, default=-1.0, help="start to ready, s (default: the profile's model_load_s)")
    replay.add_argument("--min-replicas", type=int, default=None, help="(default: 1, or the scenario's)")
    replay.add_argument("--max-replicas", type=int, default=0, help="(default: twice what the busiest 10 s needs, at least 20)")
    replay.add_argument("--slower", type=float, default=0.0, help="sensitivity: the real fleet is this fraction slower than the profile, e.g. 0.15")
    replay.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    replay.add_argument("--dev-fraction", type=float, default=0.4, help="share of the trace ebbflow is tuned on; results are on the rest (default: %(default)s)")
    replay.add_argument("--time-unit", default="auto", choices=("auto", "s", "ms", "us", "ns"), help="unit of numeric arrival times (default: detected)")
    replay.add_argument("--time-column", help="arrival time column (default: detected)")
    replay.add_argument("--prompt-column", help="prompt token column (default: detected)")
    replay.add_argument("--output-column", help="output token column (default: detected)")
    replay.add_argument("--out", help="output folder (default: ./replay-<trace name>)")
    replay.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.add_argument("--live", action="store_true", help="drive the trace through a running `ebbflow up` and compare it with the simulator (see README)")
    replay.add_argument("--speedup", type=float, default=1.0, help="--live: send at the trace's arrival times divided by this (default: %(default)s)")
    replay.add_argument("--router", help="--live: Triton gRPC address to send to (default: the running stack's router)")
    replay.add_argument("--model", default="llm", help="--live: the model the requests go to (default: %(default)s)")
    replay.add_argument("--config", help="--live: the stack's config file (its time_scale, forecaster and scheduler settings)")
    replay.add_argument("--time-scale", type=float, help="--live: the stack's actuator.time_scale (default: from --config, else 1)")
    replay.add_argument("--tail-s", type=float, default=-1.0, help="--live: seconds to watch after the last request (default: enough to return to the floor)")
    replay.add_argument("--tolerance", type=int, default=0, help="--live: replicas live may stray outside the simulator's band (default: %(default)s)")
    replay.add_argument("--state-dir", default=str(state_dir), help="--live: state directory of the running ebbflow up (default: %(default)s)")
    replay.set_defaults(func=cmd_replay)

    generate = sub.add_parser("scenario", help="write a generated scenario trace (step, spike, ramp, daily, on/off, long prompts) as a CSV that replay reads")
    generate.add_argument("name", nargs="?", help="the scenario (none: list them)")
    generate.add_argument("--out", help="CSV file to write (default: ./<name>.csv)")
    generate.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    generate.set_defaults(func=cmd_scenario)
