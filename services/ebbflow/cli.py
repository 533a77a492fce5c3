"""`ebbflow up | serve | down | status | load | history | forecast | policy | decisions | plan | explain | replay | scenario | demo`: the command line.

The commands that ask a running stack (status, load, history, forecast, policy, decisions, plan, explain)
live here; `up` and `down` are the up module's, `serve` the serve module's, `replay` and `scenario` the replay_commands module's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from google.protobuf.json_format import MessageToDict

from ebbflow import __version__, replay_commands
from ebbflow.client import Where, control_call, fetch_status
from ebbflow.runtime.config import load_config
from ebbflow.runtime.discovery import SERVICE_NAMES
from ebbflow.runtime.errors import ConfigError, EbbflowError
from ebbflow.status import status_json, status_table
from ebbflow.up import default_state_dir, down, up
from ebbflow.v1 import (
    collector_pb2,
    collector_pb2_grpc,
    forecast_pb2,
    forecast_pb2_grpc,
    load_pb2,
    policy_pb2,
    policy_pb2_grpc,
    scheduling_pb2,
    scheduling_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
)

# ---- up and down ----------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    # The command line's settings as environment overrides, so each service process reads the same config.
    overrides = {}
    if args.router_port is not None:
        overrides["EBBFLOW_ROUTER__PORT"] = str(args.router_port)
    if args.router_http_port is not None:
        overrides["EBBFLOW_ROUTER__HTTP_PORT"] = str(args.router_http_port)
    elif args.router_port == 0:  # free ports for both fronts, so several stacks can run side by side
        overrides["EBBFLOW_ROUTER__HTTP_PORT"] = "0"
    if args.time_scale is not None:
        overrides["EBBFLOW_ACTUATOR__TIME_SCALE"] = str(args.time_scale)
    config_path = Path(args.config).resolve() if args.config else None
    config = load_config(config_path, {**os.environ, **overrides})
    if args.nats_cluster != 1 and (args.nats_cluster < 3 or args.nats_url):
        raise ConfigError("--nats-cluster needs at least 3 nodes, and no --nats-url (it runs the cluster itself)")
    if args.prometheus:
        from ebbflow.monitoring import find_prometheus

        find_prometheus()  # before anything starts: a missing binary is a clear error, not a half-started stack
    return up(config, Path(args.state_dir), args.nats_url, args.verbose, config_path, overrides, args.nats_cluster, args.prometheus)


def cmd_serve(args: argparse.Namespace) -> int:
    from ebbflow.serve import serve

    config = load_config(Path(args.config) if args.config else None)
    nats_url = args.nats or config.nats.url or "nats://127.0.0.1:4222"
    return serve(args.service, config, nats_url, Path(args.state_dir), args.verbose)


def _where(args: argparse.Namespace) -> Where:
    return Where(Path(args.state_dir), getattr(args, "nats", None) or "")


def cmd_down(args: argparse.Namespace) -> int:
    return down(Path(args.state_dir), args.timeout)


def cmd_demo(args: argparse.Namespace) -> int:
    from ebbflow.demo import run

    return run(args)


# ---- status -------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    response = fetch_status(_where(args), args.model or "")
    print(json.dumps(status_json(response), indent=2) if args.json else status_table(response))
    return 0


# ---- load and history (the collector's API) ------------------------------------

DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'90', '30s', '15m', '2h', '7d' -> seconds."""
    text = text.strip().lower()
    unit = DURATION_UNITS.get(text[-1:], None)
    try:
        value = float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h, 7d)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a duration must not be negative: {text!r}")
    return value


def _positive_int(text: str, least: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    return _positive_int(text, 0)


def _collector_call(state_dir: Where, call: Callable[[collector_pb2_grpc.CollectorServiceStub], Any]) -> Any:
    return control_call(state_dir, collector_pb2_grpc.CollectorServiceStub, call)


def load_table(snapshots: list[load_pb2.LoadSnapshot]) -> str:
    header = f"{'MODEL':<16} {'STATUS':<8} {'ARRIVAL_RPS':>11} {'IN_FLIGHT':>9} {'P50_MS':>7} {'P99_MS':>7} {'READY':>5} {'STALE':>5} {'IN_TRITON':>9} {'BATCH':>5}"
    lines = [header]
    for s in snapshots:
        status = load_pb2.DataStatus.Name(s.status).removeprefix("DATA_STATUS_").lower()
        lines.append(
            f"{s.model:<16} {status:<8} {s.arrival_rps:>11.2f} {s.in_flight:>9.2f} {s.latency_p50_s * 1e3:>7.1f} {s.latency_p99_s * 1e3:>7.1f} "
            f"{s.ready_replicas:>5} {s.stale_replicas:>5} {s.in_system:>9.2f} {s.batch_efficiency:>5.2f}"
        )
        for w in s.windows:
            lines.append(
                f"  {f'last {w.window_s:g}s':<14} {f'{w.fresh_intervals}/{w.intervals}':<8} {w.arrival_rps:>11.2f} {w.in_flight:>9.2f} "
                f"{w.latency_p50_s * 1e3:>7.1f} {w.latency_p99_s * 1e3:>7.1f} {f'{w.ready_replicas_min}-{w.ready_replicas_max}':>5} {'':>5} {w.in_system:>9.2f} {w.batch_efficiency:>5.2f}"
            )
    return "\n".join(lines)


def cmd_load(args: argparse.Namespace) -> int:
    state_dir = _where(args)
    if not args.watch:
        response = _collector_call(state_dir, lambda stub: stub.GetSnapshot(collector_pb2.GetSnapshotRequest(model=args.model or ""), timeout=5.0))
        snapshots = list(response.snapshots)
        print(json.dumps([MessageToDict(s, preserving_proto_field_name=True) for s in snapshots], indent=2) if args.json else load_table(snapshots))
        return 0

    def watch(stub: collector_pb2_grpc.CollectorServiceStub) -> None:
        for message in stub.WatchSnapshots(collector_pb2.WatchSnapshotsRequest(models=[args.model] if args.model else [])):
            snapshots = list(message.snapshots)
            if args.json:
                print(json.dumps([MessageToDict(s, preserving_proto_field_name=True) for s in snapshots]), flush=True)
            else:
                print(load_table(snapshots) + "\n", flush=True)

    _collector_call(state_dir, watch)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    end = time.time()
    request = collector_pb2.GetHistoryRequest(model=args.model, start_unix_s=end - args.since, end_unix_s=end, step_s=args.step)
    response = _collector_call(_where(args), lambda stub: stub.GetHistory(request, timeout=10.0))
    names = [series.name for series in response.series]
    columns = [list(series.values) for series in response.series]
    if args.json:
        print(json.dumps({"model": response.model, "step_s": response.step_s, "time_unix_s": list(response.time_unix_s), "series": dict(zip(names, columns))}))
        return 0
    writer = csv.writer(sys.stdout)
    writer.writerow(["time_unix_s", *names])
    for index, moment in enumerate(response.time_unix_s):
        writer.writerow([f"{moment:.3f}", *("" if math.isnan(c[index]) else f"{c[index]:.6g}" for c in columns)])
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    request = forecast_pb2.GetForecastRequest(model=args.model, horizon_s=args.horizon)
    response = control_call(_where(args), forecast_pb2_grpc.ForecasterServiceStub, lambda stub: stub.GetForecast(request, timeout=10.0))
    forecast = response.forecast
    if args.json:
        print(json.dumps(MessageToDict(forecast, preserving_proto_field_name=True), indent=2))
        return 0
    quality = forecast.quality
    print(f"{forecast.model}: {forecast.method} ({forecast.observations} observations at {forecast.step_s:g} s)")
    print(f"  why: {forecast.reason}")
    if quality.scored:
        def share(value: float) -> str:
            return f"{value:.3f}" if value >= 0 else "not scored yet"  # negative: no target at that quantile yet

        print(f"  recent quality: relative MAE {share(quality.relative_mae)}, p90 coverage {share(quality.coverage_p90)}, "
              f"p99 {share(quality.coverage_p99)} ({quality.scored} targets)")
    if forecast.quantiles:
        levels = [q.quantile for q in forecast.quantiles]
        print(f"  {'AHEAD':>7} " + " ".join(f"{f'P{q * 100:g}':>9}" for q in levels))
        for step in range(len(forecast.quantiles[0].arrival_rps)):
            ahead = (step + 1) * forecast.step_s
            print(f"  {ahead:>6g}s " + " ".join(f"{q.arrival_rps[step]:>9.2f}" for q in forecast.quantiles))
    return 0


# ---- policies ------------------------------------------------------------------


def _policy_call(state_dir: Where, call: Callable[[policy_pb2_grpc.PolicyServiceStub], Any]) -> Any:
    return control_call(state_dir, policy_pb2_grpc.PolicyServiceStub, call)


def _read_text(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise EbbflowError(f"cannot read {path}: {error.strerror}") from None


def cmd_policy(args: argparse.Namespace) -> int:
    from google.protobuf.field_mask_pb2 import FieldMask

    from ebbflow.policy import PIN_FIELDS, patch_to_proto, policy_from_proto, policy_json, policy_patch, policy_to_proto
    from ebbflow.runtime.config import parse_config

    state_dir = _where(args)
    token = os.environ.get("EBBFLOW_ADMIN_TOKEN", "")
    admin = (("authorization", f"Bearer {token}"),) if token else ()
    if args.action != "list" and not args.target:
        raise EbbflowError(f"policy {args.action} needs a {'file (or - for stdin)' if args.action in ('set', 'import') else 'model'}")
    if (args.replace or args.unpin) and args.action != "set":
        raise EbbflowError("--replace and --unpin belong to `policy set`")
    if args.unpin and not args.replace:
        raise EbbflowError("--unpin goes with --replace (a patch keeps the pin unless it sets `pinned: false`)")

    def set_policy(request: policy_pb2.SetPolicyRequest) -> policy_pb2.SetPolicyResponse:
        return _policy_call(state_dir, lambda stub: stub.SetPolicy(request, timeout=5.0, metadata=admin))

    def patch(model: str, changes: dict[str, Any]) -> policy_pb2.SetPolicyResponse:
        return set_policy(policy_pb2.SetPolicyRequest(policy=patch_to_proto(model, changes), update_mask=FieldMask(paths=sorted(changes))))

    if args.action == "list":
        response = _policy_call(state_dir, lambda stub: stub.ListPolicies(policy_pb2.ListPoliciesRequest(), timeout=5.0))
        for policy in response.policies:
            if args.json:
                print(policy_json(policy))
                continue
            extras = "".join(
                text for flag, text in ((policy.vertical_auto, ", vertical auto"), (policy.priority, f", priority {policy.priority}"), (policy.mode == policy_pb2.POLICY_MODE_ADVISORY, ", advisory")) if flag
            )
            if policy.pinned:
                extras += f", pinned at {policy.pin_replicas} by {policy.pin_by}"
            try:
                sizing = policy_from_proto(policy).sizing_text
            except ConfigError as error:
                sizing = f"invalid: {error}"
            forecast = f"p{policy.forecast_quantile * 100:g} forecast" if policy.forecast_quantile else "no forecast"
            print(f"{policy.model:<16} {policy.min_replicas}-{policy.max_replicas} replicas, {sizing}, {forecast}{extras}")
    elif args.action == "get":
        response = _policy_call(state_dir, lambda stub: stub.GetPolicy(policy_pb2.GetPolicyRequest(model=args.target), timeout=5.0))
        print(policy_json(response.policy))
    elif args.action == "delete":
        _policy_call(state_dir, lambda stub: stub.DeletePolicy(policy_pb2.DeletePolicyRequest(model=args.target), timeout=10.0, metadata=admin))
        print(f"policy of {args.target} deleted; its replicas drain and stop (`ebbflow status` lists the model until they have)")
    elif args.action == "set":
        import yaml

        try:
            raw = yaml.safe_load(_read_text(args.target)) or {}
        except yaml.YAMLError as error:
            raise EbbflowError(f"{args.target} is not valid YAML: {error}") from None
        models = raw.get("models", raw) if isinstance(raw, dict) else None
        if not isinstance(models, dict):
            raise EbbflowError(f"{args.target}: expected `models: {{name: {{field: value}}}}` (as in the config file)")
        if args.replace:  # whole policies: defaults filled and every field validated here too
            requests = [policy_pb2.SetPolicyRequest(policy=policy_to_proto(p), replace=True, unpin=args.unpin) for p in parse_config({"models": models}).models]
            responses = [(r.policy.model, set_policy(r)) for r in requests]
        else:  # a patch: names and types checked here, the merged policy validated by the server
            patches = {str(name): policy_patch(str(name), fields) for name, fields in models.items()}
            responses = [(name, patch(name, changes)) for name, changes in patches.items()]
        for name, stored in responses:
            print(f"policy of {name}: {'; '.join(stored.changes) if stored.changes else 'unchanged'}")
    elif args.action in ("pin", "unpin", "advisory", "active"):
        _policy_call(state_dir, lambda stub: stub.GetPolicy(policy_pb2.GetPolicyRequest(model=args.target), timeout=5.0))  # NOT_FOUND names the models with one
        changes: dict[str, Any]
        if args.action == "pin":
            if args.replicas is None or not args.by or not args.why:
                raise EbbflowError("policy pin needs --replicas N, --by WHO and --why REASON")
            until = time.time() + args.for_ if args.for_ else 0.0
            changes = dict(zip(PIN_FIELDS, (True, args.replicas, args.by, args.why, until)))
        elif args.action == "unpin":
            changes = dict(zip(PIN_FIELDS, (False, 0, "", "", 0.0)))
        else:
            changes = {"mode": args.action}
        patch(args.target, changes)
        print(f"policy of {args.target}: {args.action}" + (f" at {args.replicas} replicas" if args.action == "pin" else ""))
    elif args.action == "import":
        request = policy_pb2.ImportHpaRequest(manifest=_read_text(args.target), model=args.model or "", apply=not args.dry_run)
        response = _policy_call(state_dir, lambda stub: stub.ImportHpa(request, timeout=5.0, metadata=admin))
        for note in response.notes:
            print(f"# {note}")
        print(policy_json(response.policy))
        print(f"# {'stored' if response.applied else 'not stored (--dry-run)'}")
    return 0


# ---- tenants ---------------------------------------------------------------------


def _tenant_line(tenant: tenant_pb2.Tenant) -> str:
    limits = ", ".join(
        text for value, text in (
            (tenant.requests_per_minute, f"{tenant.requests_per_minute} requests/min"),
            (tenant.tokens_per_minute, f"{tenant.tokens_per_minute} tokens/min"),
            (tenant.priority, f"priority {tenant.priority}"),
        ) if value
    ) or "no limits"  # fmt: skip
    state = f"revoked {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(tenant.revoked_unix_s))}" if tenant.revoked_unix_s else "active"
    return f"{tenant.name:<16} {state:<28} models: {', '.join(tenant.models) or 'all'}; {limits}"


def cmd_tenant(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    where = _where(args)
    token = os.environ.get("EBBFLOW_ADMIN_TOKEN", "")
    admin = (("authorization", f"Bearer {token}"),) if token else ()

    def call(fn: Callable[[tenant_pb2_grpc.TenantServiceStub], Any]) -> Any:
        return control_call(where, tenant_pb2_grpc.TenantServiceStub, fn)

    if args.action != "list" and not args.name:
        raise EbbflowError(f"tenant {args.action} needs a tenant name")
    if args.action == "add":
        models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
        asked = tenant_pb2.Tenant(
            name=args.name, models=models, requests_per_minute=args.requests_per_minute, tokens_per_minute=args.tokens_per_minute, priority=args.priority,
        )
        response = call(lambda stub: stub.AddTenant(tenant_pb2.AddTenantRequest(tenant=asked), timeout=5.0, metadata=admin))
        print(_tenant_line(response.tenant))
        print(f"API key (shown only now; clients send `authorization: Bearer <key>`): {response.api_key}")
    elif args.action == "list":
        response = call(lambda stub: stub.ListTenants(tenant_pb2.ListTenantsRequest(), timeout=5.0, metadata=admin))
        for tenant in response.tenants:
            print(json_format.MessageToJson(tenant, indent=None) if args.json else _tenant_line(tenant))
        if not response.tenants and not args.json:
            print("no tenants (ebbflow tenant add NAME)")
    else:
        response = call(lambda stub: stub.RevokeTenant(tenant_pb2.RevokeTenantRequest(name=args.name), timeout=5.0, metadata=admin))
        print(_tenant_line(response.tenant))
    return 0


# ---- decisions -------------------------------------------------------------------


def _scheduler_call(state_dir: Where, call: Callable[[scheduling_pb2_grpc.SchedulerServiceStub], Any]) -> Any:
    return control_call(state_dir, scheduling_pb2_grpc.SchedulerServiceStub, call)


def cmd_decisions(args: argparse.Namespace) -> int:
    request = scheduling_pb2.ListDecisionsRequest(model=args.model, limit=args.limit)
    response = _scheduler_call(_where(args), lambda stub: stub.ListDecisions(request, timeout=10.0))
    if args.json:
        print(json.dumps([MessageToDict(d, preserving_proto_field_name=True) for d in response.decisions], indent=2))
        return 0
    if not response.decisions:
        print(f"no decisions recorded for {args.model}")
    for d in response.decisions:
        moment = time.strftime("%H:%M:%S", time.localtime(d.desired.decided_at_unix_s))
        print(f"{d.generation:>5} {moment} {d.previous_replicas:>3} -> {d.desired.horizontal.replicas:<3} {d.desired.reason}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    response = _scheduler_call(_where(args), lambda stub: stub.GetPlan(scheduling_pb2.GetPlanRequest(), timeout=10.0))
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return 0
    inventory = ", ".join(response.nodes) or "none (replicas take no GPU slot)"
    budget = f"{response.gpu_budget:g} GPUs" if response.gpu_budget else "none"
    leadership = "this scheduler leads" if response.leading else f"answered by a standby; {response.leader or 'no scheduler'} leads"
    print(f"scheduler {response.instance_id}: {leadership}")
    print(f"inventory: {inventory}; budget: {budget}")
    print(f"GPUs wanted {response.gpus_wanted:.2f}, desired {response.gpus_desired:.2f}, in use {response.gpus_in_use}")
    print(f"{'MODEL':<16} {'PRIO':>4} {'WANTED':>6} {'DESIRED':>7} {'GPU/REPL':>8} {'SHAPE':>9}  SLOTS")
    for plan in response.models:
        shape = f"{plan.desired.vertical.instances_per_replica or '-'}x{plan.desired.vertical.max_batch_size or '-'}"
        slots = ", ".join(f"{r.gpu_slot or r.replica_id}({r.state})" for r in plan.replicas) or "-"
        mode = " advisory" if plan.advisory else ""
        print(f"{plan.model:<16} {plan.priority:>4} {plan.wanted_replicas:>6} {plan.desired.horizontal.replicas:>7} {plan.gpus_per_replica:>8.2f} {shape:>9}  {slots}{mode}")
        if plan.wanted_replicas > plan.desired.horizontal.replicas and plan.budget_note:
            print(f"{'':<16} gives way: {plan.budget_note}")
    return 0


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _generation(state_dir: Where, model: str, generation: int | None) -> int:
    """The decision `explain` means: none or 0 the latest evaluation (why the model has what it has now), N > 0 that
    generation, -N the N-th latest recorded change (-1 the latest)."""
    if not generation or generation > 0:
        return generation or 0
    request = scheduling_pb2.ListDecisionsRequest(model=model, limit=-generation)
    decisions = _scheduler_call(state_dir, lambda stub: stub.ListDecisions(request, timeout=10.0)).decisions
    if len(decisions) < -generation:
        raise EbbflowError(f"{model} has {len(decisions)} recorded decision(s); {generation} asks for the {_ordinal(-generation)} latest")
    return int(decisions[0].generation)  # oldest first: the first of the newest N


def cmd_explain(args: argparse.Namespace) -> int:
    request = scheduling_pb2.ExplainRequest(model=args.model, generation=_generation(_where(args), args.model, args.generation))
    response = _scheduler_call(_where(args), lambda stub: stub.Explain(request, timeout=10.0))
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return 0
    d, i = response.decision, response.decision.inputs
    if response.evaluation:
        age = max(0.0, time.time() - d.desired.decided_at_unix_s)
        change = "no change" if d.desired.horizontal.replicas == d.previous_replicas else f"{d.previous_replicas} -> {d.desired.horizontal.replicas}"
        print(f"{d.model} now: {d.previous_replicas} replicas in force (generation {d.generation}); latest evaluation {age:.1f} s ago: {change}")
    else:
        print(f"{d.model} generation {d.generation}: {d.previous_replicas} -> {d.desired.horizontal.replicas} replicas")
    print(f"  reason: {d.desired.reason}")
    print(f"  load: {'fresh' if i.fresh else 'not fresh'}; in_flight {i.in_flight:.2f}, arrival_rps {i.arrival_rps:.2f}; requests held: {'yes' if i.woken else 'no'}")
    print(f"  reactive -> {i.reactive_replicas}; predictive -> {i.predictive_replicas} (p{i.forecast_quantile * 100:g} {i.forecast_rps:.2f} rps over {i.lead_s:.0f} s, {i.time_in_system_s:.2f} s in system)")
    if i.forecast_untrusted_reason:
        print(f"  forecast not trusted: {i.forecast_untrusted_reason}")
    if i.HasField("recent_peak_rps"):
        print(f"  highest arrival rate of the last hour: {i.recent_peak_rps:.2f} rps (forecasts are capped at 3x it)")
    print(f"  recent recommendations: {list(i.prior_recommendations)}; policy {i.policy.min_replicas}-{i.policy.max_replicas}, scale-down delay {i.policy.scale_down_delay_s:g} s")
    verdict = "reproduced" if response.matches else "NOT reproduced"
    print(f"  recomputed with the same rule: {response.recomputed_replicas} replicas ({verdict})")
    if not response.matches:
        print(f"  recomputed reason: {response.recomputed_reason}")
    return 0 if response.matches else 1


# ---- main ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebbflow", description="Autoscaling control plane for NVIDIA Triton inference fleets")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole embedded stack (nats-server, router, collector, scheduler, local actuator)")
    up.add_argument("--config", help="YAML config file (policies under `models:`); defaults are built in")
    up.add_argument("--state-dir", default=str(default_state_dir()), help="state, logs and lock (default: %(default)s)")
    up.add_argument("--router-port", type=int, help="router port (default 8001; 0 picks a free port, and a free HTTP port unless --router-http-port says)")
    up.add_argument("--router-http-port", type=int, help="router KServe v2 HTTP port (default 8000; 0 picks a free port; -1 serves no HTTP)")
    up.add_argument("--nats-url", help="use this NATS server (or comma-separated cluster nodes) instead of starting one")
    up.add_argument(
        "--nats-cluster", type=int, default=1, metavar="N",
        help="run N >= 3 nats-servers as one JetStream cluster on loopback, buckets and streams on 3 nodes (default: one server)",
    )
    up.add_argument("--time-scale", type=float, help="emulated seconds x this (faster demos and tests)")
    up.add_argument(
        "--prometheus", action="store_true",
        help="also run a Prometheus on 127.0.0.1 scraping every service and replica, with deploy/prometheus's rules (prints its URL)",
    )
    up.add_argument("-v", "--verbose", action="store_true", help="debug logging in <state-dir>/logs/ebbflow.log")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser(
        "serve", help="run one service in this process (what `ebbflow up` runs for each); find the others through NATS"
    )
    serve.add_argument("service", choices=SERVICE_NAMES)
    serve.add_argument("--config", help="YAML config file; the service reads its own section (listen addresses) and `nats:`")
    serve.add_argument("--nats", metavar="URL", help="NATS server (default: the config's nats.url, else nats://127.0.0.1:4222)")
    serve.add_argument("--state-dir", default=str(default_state_dir()), help="logs, the actuator's replica state, the router's front (default: %(default)s)")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(func=cmd_serve)

    down = sub.add_parser("down", help="stop the `ebbflow up` running on a state directory and wait until it has exited")
    down.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    down.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to exit (default: %(default)s)")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="per-model replicas, load and last decision of a running `ebbflow up`")
    status.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    status.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("model", nargs="?", help="only this model")
    status.set_defaults(func=cmd_status)

    load = sub.add_parser("load", help="the collector's live load picture: per model, last interval and trailing windows")
    load.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    load.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    load.add_argument("--json", action="store_true", help="the LoadSnapshot messages as JSON")
    load.add_argument("--watch", action="store_true", help="print every new snapshot (Ctrl-C to stop)")
    load.add_argument("model", nargs="?", help="only this model")
    load.set_defaults(func=cmd_load)

    history = sub.add_parser("history", help="a model's load history as CSV (NaN steps are empty): arrival_rps, latency, Triton load")
    history.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    history.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    history.add_argument("--since", type=parse_duration, default=3600.0, help="how far back, e.g. 90s, 15m, 2h, 7d (default: 1h)")
    history.add_argument("--step", type=parse_duration, default=0.0, help="spacing of the points (default: the finest stored)")
    history.add_argument("--json", action="store_true", help="one JSON object instead of CSV")
    history.add_argument("model")
    history.set_defaults(func=cmd_history)

    forecast = sub.add_parser("forecast", help="a model's demand forecast (p50, p90, p99 over the horizon) and how it was chosen")
    forecast.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    forecast.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    forecast.add_argument("--horizon", type=parse_duration, default=0.0, help="how far ahead, e.g. 2m or 1h (default: the finest resolution's horizon)")
    forecast.add_argument("--json", action="store_true", help="the Forecast message as JSON")
    forecast.add_argument("model")
    forecast.set_defaults(func=cmd_forecast)

    policy = sub.add_parser("policy", help="list, show, set, delete per-model policies, or import a Kubernetes HPA manifest")
    policy.add_argument(
        "action",
        choices=("list", "get", "set", "delete", "import", "pin", "unpin", "advisory", "active"),
        help="set takes a YAML file like the config's `models:`; import takes an HPA manifest; pin holds a model's replicas "
        "(an incident override); advisory publishes decisions without carrying them out; active undoes it",
    )
    policy.add_argument("target", nargs="?", default="", help="model (get, delete, pin, unpin, advisory, active) or file, - for stdin (set, import)")
    policy.add_argument("--replicas", type=int, help="pin: the replicas to hold")
    policy.add_argument("--by", help="pin: who")
    policy.add_argument("--why", help="pin: why")
    policy.add_argument("--for", dest="for_", type=parse_duration, default=0.0, help="pin: how long, e.g. 30m (default: until unpinned)")
    policy.add_argument("--model", help="import: the ebbflow model the HPA scales (default: spec.scaleTargetRef.name)")
    policy.add_argument("--dry-run", action="store_true", help="import: translate and show, do not store")
    policy.add_argument("--replace", action="store_true", help="set: store each policy whole (fields left out take their defaults) instead of changing only the fields given")
    policy.add_argument("--unpin", action="store_true", help="set --replace: allow dropping an active pin the new policy does not carry")
    policy.add_argument("--json", action="store_true", help="list: full policies as JSON")
    policy.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    policy.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    policy.set_defaults(func=cmd_policy)

    tenant = sub.add_parser(
        "tenant", help="add, list or revoke tenants: API keys (router.require_api_key), the models each may call, its limits",
        description="Needs the admin token in EBBFLOW_ADMIN_TOKEN when scheduler.admin_token is set. Limits are per router process.",
    )  # fmt: skip
    tenant.add_argument("action", choices=("add", "list", "revoke"), help="add prints the new API key once; revoke refuses the key from then on")
    tenant.add_argument("name", nargs="?", default="", help="the tenant (add, revoke)")
    tenant.add_argument("--models", help="add: comma-separated models the tenant may call (default: all)")
    tenant.add_argument("--requests-per-minute", type=_non_negative_int, default=0, help="add: request limit (default: none)")
    tenant.add_argument("--tokens-per-minute", type=_non_negative_int, default=0, help="add: prompt plus requested output tokens (default: none)")
    tenant.add_argument("--priority", type=int, default=0, help="add: higher is admitted first under overload (default: %(default)s)")
    tenant.add_argument("--json", action="store_true", help="list: Tenant messages as JSON (key hashes included)")
    tenant.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    tenant.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    tenant.set_defaults(func=cmd_tenant)

    decisions = sub.add_parser("decisions", help="a model's recent scaling decisions (the DECISIONS stream)")
    decisions.add_argument("model")
    decisions.add_argument("--limit", type=_positive_int, default=20, help="the newest this many (default: %(default)s)")
    decisions.add_argument("--json", action="store_true", help="the ScalingDecision messages as JSON")
    decisions.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    decisions.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    decisions.set_defaults(func=cmd_decisions)

    plan = sub.add_parser("plan", help="every model's wanted and desired replicas, GPU budget share, shape and GPU slots")
    plan.add_argument("--json", action="store_true", help="the GetPlan response as JSON")
    plan.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    plan.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    plan.set_defaults(func=cmd_plan)

    explain = sub.add_parser("explain", help="a decision's inputs and reason, recomputed by the same rule (exit 1 if it does not match)")
    explain.add_argument("model")
    explain.add_argument(
        "generation", nargs="?", type=int,
        help="a recorded change's generation, or -N for the N-th latest change (default: the latest evaluation: why the model has what it has now)",
    )
    explain.add_argument("--json", action="store_true", help="the ExplainResponse as JSON")
    explain.add_argument("--state-dir", default=str(default_state_dir()), help="state directory of the running ebbflow up (default: %(default)s)")
    explain.add_argument("--nats", metavar="URL", help="find the services through this NATS instead of the state directory (a stack on other machines)")
    explain.set_defaults(func=cmd_explain)

    replay_commands.add_parsers(sub, default_state_dir())

    demo = sub.add_parser("demo", help="start the stack, drive a ramp of load through it and show it scale out and in")
    demo.add_argument("--duration-s", type=float, default=120.0, help="length of the load ramp (default: %(default)s)")
    demo.add_argument("--peak-clients", type=int, default=24, help="concurrent clients at the peak (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EbbflowError as error:
        print(f"ebbflow: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`ebbflow history llm | head`): stop quietly, as Unix tools do. Output still
        # buffered for the closed pipe goes to /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
