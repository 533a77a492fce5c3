"""`ebbflow replay --live`: drive a trace through a running stack and set it beside the simulator.

The requests are real: unchanged `tritonclient` calls through the router,
sent open loop at the trace's arrival times divided by the speedup (an
earlier request never delays a later one). While they run, the fleet is
sampled through the control API `ebbflow status` uses, and afterwards the
scheduler's decisions are read back (ListDecisions). Then the same trace runs
in the simulator under the same policy and clock (`ebbflow.sim.live`), and
the two are reported side by side. Everything that decides lives in the pure
half; this module only sends, samples and reads.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import grpc
import numpy as np

from ebbflow.emulator.service_time import load_profile
from ebbflow.emulator.tokens import expected_text
from ebbflow.runtime.config import Config, load_config
from ebbflow.runtime.errors import ConfigError, EbbflowError
from ebbflow.scheduler.capacity import CapacityModel, Shape, Slo
from ebbflow.sim import live
from ebbflow.sim.workload import requests_from_trace
from ebbflow.traces import load_trace
from ebbflow.up import read_state
from ebbflow.runtime.wire import FAILED
from ebbflow.v1 import policy_pb2, policy_pb2_grpc, scheduling_pb2, scheduling_pb2_grpc, status_pb2, status_pb2_grpc

@dataclass(frozen=True)
class LiveReplayOptions:
    trace: Path
    state_dir: Path
    speedup: float = 1.0
    model: str = "llm"
    router: str = ""
    """Triton gRPC address to send to; empty: the running stack's router (its state.json)."""
    config: Path | None = None
    """The stack's config file: time_scale, the forecaster's finest resolution, the scheduler's settings."""
    time_scale: float = 0.0
    """Overrides the config's actuator.time_scale when > 0."""
    profile: str = "llama2-7b-a100"
    slo_latency_s: float = 0.0
    """End-to-end latency objective of a unary call; 0: the policy's slo_latency_s, else none."""
    tail_s: float = -1.0
    """How long to keep sampling after the last request; < 0: long enough to see the fleet return to its floor."""
    max_prompt_words: int = 4096
    max_tokens: int = 4096
    tolerance: int = 0
    """Replicas live may be outside the band before a sample counts as outside."""
    sample_s: float = 0.5
    request_timeout_s: float = 300.0
    clients: int = 4
    time_unit: str = "auto"
    time_column: str | None = None
    prompt_column: str | None = None
    output_column: str | None = None


@dataclass(frozen=True)
class Sample:
    t_s: float
    desired: int
    ready: int
    holding: int
    """Starting, ready or draining: replicas holding a GPU."""


@dataclass
class Recorded:
    """Per request: when it was sent (after the start), its latency and status code."""

    sent_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    cold_starts_s: dict[str, float] = field(default_factory=dict)


@lru_cache(maxsize=4096)
def _request(words: int, max_tokens: int) -> tuple[str, str]:
    prompt = live.prompt_text(words)
    return prompt, expected_text(prompt, max_tokens)


async def _send(client, model: str, request: live.PlannedRequest, start: float, timeout_s: float, recorded: Recorded, index: int) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    loop = asyncio.get_running_loop()
    prompt, expected = _request(request.prompt_words, request.max_tokens)
    text = triton_grpc.InferInput("text_input", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
    tokens = triton_grpc.InferInput("max_tokens", [1, 1], "INT32")
    tokens.set_data_from_numpy(np.array([[request.max_tokens]], dtype=np.int32))
    sent = loop.time()
    recorded.sent_s[index] = sent - start
    try:
        result = await client.infer(model, [text, tokens], client_timeout=timeout_s)
        answer = result.as_numpy("text_output").reshape(-1)[0].decode()
        recorded.codes[index] = "OK" if answer == expected else "WRONG_OUTPUT"
    except InferenceServerException as error:
        recorded.codes[index] = str(error.status() or "UNKNOWN").removeprefix("StatusCode.")
    except Exception as error:  # any other client-side failure is a client error too, named by its type
        recorded.codes[index] = type(error).__name__
    recorded.latency_s[index] = loop.time() - sent


async def _sample(control: str, model: str, start: float, stop: asyncio.Event, every_s: float, recorded: Recorded) -> None:
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(control) as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        while not stop.is_set():
            try:
                response = await stub.GetStatus(status_pb2.GetStatusRequest(model=model), timeout=5)
            except grpc.aio.AioRpcError:
                response = None  # a missed sample is a gap, not an end
            if response is not None:
                for m in response.models:
                    if m.name != model:
                        continue
                    recorded.samples.append(
                        Sample(loop.time() - start, m.desired_replicas, m.ready_replicas, m.ready_replicas + m.starting_replicas + m.draining_replicas)
                    )
                    for r in m.replicas:
                        if r.ready_at_unix_s > r.started_at_unix_s > 0 and r.state != FAILED:
                            recorded.cold_starts_s[r.replica_id] = r.ready_at_unix_s - r.started_at_unix_s
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except asyncio.TimeoutError:
                pass


async def drive(options: LiveReplayOptions, plan: tuple[live.PlannedRequest, ...], router: str, control: str, tail_s: float) -> tuple[Recorded, float]:
    """Send every request at its time, sample the fleet until tail_s after the last one; returns what was
    recorded and the wall-clock (unix) time of the start."""
    import tritonclient.grpc.aio as triton_aio

    loop = asyncio.get_running_loop()
    n = len(plan)
    recorded = Recorded([math.nan] * n, [math.nan] * n, [""] * n)
    clients = [triton_aio.InferenceServerClient(router) for _ in range(max(1, options.clients))]
    stop = asyncio.Event()
    start = loop.time() + 1.0  # the sampler sees the fleet before the first request
    wall_start = time.time() + 1.0
    sampler = asyncio.create_task(_sample(control, options.model, start, stop, options.sample_s, recorded))
    tasks = []
    try:
        for i, request in enumerate(plan):
            delay = start + request.send_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the open loop, not waiting for anything
            tasks.append(asyncio.create_task(_send(clients[i % len(clients)], options.model, request, start, options.request_timeout_s, recorded, i)))
        await asyncio.gather(*tasks)
        end = start + (plan[-1].send_s if plan else 0.0) + tail_s
        if end > loop.time():
            try:
                await asyncio.wait_for(asyncio.shield(sampler), end - loop.time())
            except asyncio.TimeoutError:
                pass
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(sampler, *tasks, return_exceptions=True)
        for client in clients:
            await client.close()
    return recorded, wall_start


def _policy_and_status(control: str, model: str) -> tuple[policy_pb2.ScalingPolicy, status_pb2.ModelStatus]:
    with grpc.insecure_channel(control) as channel:
        try:
            policy = policy_pb2_grpc.PolicyServiceStub(channel).GetPolicy(policy_pb2.GetPolicyRequest(model=model), timeout=5).policy
            status = status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest(model=model), timeout=5)
        except grpc.RpcError as error:
            raise EbbflowError(f"ebbflow up at {control}: {error.details()}") from None
    found = [m for m in status.models if m.name == model]
    if not found:
        raise ConfigError(f"model {model!r} is not served by the running stack; it has: {', '.join(m.name for m in status.models) or 'none'}")
    return policy, found[0]


def _decisions(control: str, model: str, wall_start: float) -> list[dict]:
    with grpc.insecure_channel(control) as channel:
        try:
            listed = scheduling_pb2_grpc.SchedulerServiceStub(channel).ListDecisions(scheduling_pb2.ListDecisionsRequest(model=model, limit=1000), timeout=10)
        except grpc.RpcError as error:
            raise EbbflowError(f"ebbflow up at {control}: ListDecisions: {error.details()}") from None
    changes = []
    for d in listed.decisions:
        t = d.desired.decided_at_unix_s - wall_start
        if t >= -1.0 and d.previous_replicas != d.desired.horizontal.replicas:
            changes.append((t, int(d.previous_replicas), int(d.desired.horizontal.replicas), d.desired.reason))
    return live.changes_as_dicts(changes)


def _stack_config(options: LiveReplayOptions) -> tuple[Config, str]:
    config = load_config(options.config)
    source = f"settings from {options.config}" if options.config else "the built-in settings of `ebbflow up` (pass --config for the stack's file)"
    return config, source


def run_live_replay(options: LiveReplayOptions, out: Path | None, plots: bool = True, say: Callable[[str], None] = lambda _: None) -> dict:
    """Replay live, simulate, compare; writes results.json (and replicas.png) under `out` when given."""
    from ebbflow.policy import policy_from_proto

    if options.speedup <= 0:
        raise ConfigError(f"--speedup must be > 0, got {options.speedup}")
    state = read_state(options.state_dir)
    router, control = options.router or state["router"], state["control"]
    config, settings_source = _stack_config(options)
    time_scale = options.time_scale if options.time_scale > 0 else config.actuator.time_scale
    trace = load_trace(options.trace, options.time_column, options.time_unit, options.prompt_column, options.output_column)
    say(trace.describe())
    if trace.kind != "requests":
        raise ConfigError(f"{trace.name} holds rates per window, not requests: a live replay needs one row per request")
    plan = live.plan_requests(requests_from_trace(trace), options.speedup, options.max_prompt_words, options.max_tokens)
    if not plan:
        raise ConfigError(f"{trace.name} has no requests")
    try:
        profile = load_profile(options.profile)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    policy_message, before = _policy_and_status(control, options.model)
    policy = policy_from_proto(policy_message)
    measured_before = [r.ready_at_unix_s - r.started_at_unix_s for r in before.replicas if r.ready_at_unix_s > r.started_at_unix_s > 0]
    estimate = profile.model_load_s * time_scale + 2.0
    tail = options.tail_s
    if tail < 0:
        cold = max(measured_before, default=estimate)
        tail = policy.panic_hold_s + policy.scale_down_delay_s + policy.scale_to_zero_idle_s + 2 * cold + 10 * config.scheduler.interval_s + 5.0
    span_s = plan[-1].send_s + tail
    say(f"sending {len(plan)} requests over {plan[-1].send_s:.0f} s to {router} (model {options.model}), then watching the fleet for {tail:.0f} s")
    recorded, wall_start = asyncio.run(drive(options, plan, router, control, tail))
    live_changes = _decisions(control, options.model, wall_start)

    cold_starts = list(recorded.cold_starts_s.values()) or measured_before
    cold_start_s = statistics.median(cold_starts) if cold_starts else estimate
    window_s = (max(cold_starts) if cold_starts else estimate) + config.scheduler.interval_s
    settings = live.LiveSettings(
        time_scale=time_scale,
        cold_start_s=cold_start_s,
        shape=Shape(max(1, before.instances_per_replica), max(1, before.max_batch_size)),
        policy=policy,
        initial_replicas=int(before.ready_replicas),
        forecast_step_s=config.forecaster.resolutions_s[0],
        forecast_horizon_steps=config.forecaster.horizon_steps,
        min_forecast_observations=config.scheduler.min_forecast_observations,
        interval_s=config.scheduler.interval_s,
        load_window_s=config.scheduler.load_window_s,
        burst_window_s=config.scheduler.burst_window_s,
    )
    capacity = None
    if policy.has_slo:
        from ebbflow.scheduler.measure import measure_curve

        slo = Slo(ttft_s=policy.slo_ttft_s, tpot_s=policy.slo_tpot_s, latency_s=policy.slo_latency_s, percentile=policy.slo_share * 100)
        prompts = np.array([r.prompt_words for r in plan])
        outputs = np.array([r.max_tokens for r in plan])
        capacity = CapacityModel(measure_curve(profile, settings.shape, slo, prompts, outputs, speed_factor=1.0 / time_scale, noise_sigma=0.0))
    say(f"simulating the same {len(plan)} requests under the same policy (cold start {cold_start_s:.1f} s as measured live) ...")
    outcome, controller = live.simulate_like_live(plan, span_s, profile, settings, capacity)
    report, arrays = compare_sides(options, plan, recorded, outcome, controller, settings, live_changes, span_s, window_s, time_scale, settings_source, trace.name)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(report, indent=2))
        report["files"] = [str(out / "results.json")]
        if plots:
            live_t, live_ready, live_desired, agree, sent_per_s = arrays
            report["files"].append(str(live.plot(report, live_t, live_ready, live_desired, outcome, agree, sent_per_s, out / "replicas.png")))
    return report


def compare_sides(
    options: LiveReplayOptions,
    plan: tuple[live.PlannedRequest, ...],
    recorded: Recorded,
    outcome,  # type: ignore[no-untyped-def]
    controller: live.LiveLikeEbbflow,
    settings: live.LiveSettings,
    live_changes: list[dict],
    span_s: float,
    window_s: float,
    time_scale: float,
    settings_source: str,
    name: str,
) -> tuple[dict, tuple]:
    samples = [s for s in recorded.samples if 0 <= s.t_s <= span_s]
    live_t = np.array([s.t_s for s in samples])
    live_ready = np.array([s.ready for s in samples])
    live_desired = np.array([s.desired for s in samples])
    live_holding = np.array([s.holding for s in samples])
    horizon = int(span_s)  # the simulator's last sample, at its clock's end, is where it stops every replica
    sim_ready = outcome.ready[:horizon].astype(float)
    sim_holding = outcome.replicas[:horizon].astype(float)
    agree = live.agreement(live_t, live_ready, sim_ready, window_s, options.tolerance)
    policy = settings.policy
    limit = options.slo_latency_s or policy.slo_latency_s
    objective = f"latency <= {limit:g} s" if limit else "answered correctly (no latency objective)"
    latency = np.array(recorded.latency_s, dtype=float)
    codes = np.array(recorded.codes)
    ok = codes == "OK"
    errors = {code: int((codes == code).sum()) for code in sorted(set(recorded.codes)) if code != "OK"}
    sim_latency = outcome.latency_s.astype(float)
    last_send = plan[-1].send_s
    sim_changes = live.changes_as_dicts(controller.changes)
    dt = np.diff(np.append(live_t, span_s)) if len(live_t) else np.array([])
    report = {
        "trace": name,
        "model": options.model,
        "requests": len(plan),
        "span_s": round(span_s, 1),
        "speedup": options.speedup,
        "time_scale": time_scale,
        "cold_start_s": round(settings.cold_start_s, 2),
        "settings": settings_source,
        "objective": objective,
        "compared": (
            "live ready replicas (sampled every "
            f"{options.sample_s:g} s through the status API) against the simulator's ready replicas on the same wall clock, "
            "same requests, policy, shape, time scale and measured cold start; the simulator's forecast is the forecaster's "
            "Selector over the true arrival rates, the live one is the running forecaster's over what the collector measured"
        ),
        "policy": {k: getattr(policy, k) for k in ("min_replicas", "max_replicas", "target_in_flight_per_replica", "scale_down_delay_s", "forecast_quantile", "scale_to_zero_idle_s")},
        "live": {
            "requests": int(sum(1 for c in recorded.codes if c)),
            "errors": int(len(codes) - ok.sum()),
            "error_codes": errors,
            "attainment": live.attainment(latency, ok, limit),
            "latency_p50_s": live.percentile(latency[ok], 50),
            "latency_p99_s": live.percentile(latency[ok], 99),
            "send_lag_p99_s": live.percentile(np.array(recorded.sent_s) - np.array([r.send_s for r in plan]), 99),
            "peak_ready": int(live_ready.max(initial=0)),
            "peak_desired": int(live_desired.max(initial=0)),
            "ready_replica_s": round(float((live_ready * dt).sum()), 1),
            "decisions": len(live_changes),
            "returned_to_floor_s": _after(live.returned_at(live_t, live_holding, policy.min_replicas, last_send), last_send),
            "changes": live_changes,
        },
        "simulated": {
            "requests": len(plan),
            "attainment": live.attainment(sim_latency, np.isfinite(sim_latency), limit),
            "latency_p50_s": live.percentile(sim_latency, 50),
            "latency_p99_s": live.percentile(sim_latency, 99),
            "peak_ready": int(sim_ready.max(initial=0)),
            "peak_desired": max([settings.initial_replicas, *(c["to"] for c in sim_changes)]),
            "ready_replica_s": round(float(sim_ready[: int(span_s)].sum()), 1),
            "decisions": len(sim_changes),
            "returned_to_floor_s": _after(live.returned_at(np.arange(len(sim_holding), dtype=float), sim_holding, policy.min_replicas, last_send), last_send),
            "changes": sim_changes,
        },
        "agreement": {
            "window_s": round(agree.window_s, 2),
            "tolerance_replicas": options.tolerance,
            "samples": agree.samples,
            "inside_share": round(agree.inside_share, 4) if not math.isnan(agree.inside_share) else None,
            "worst_above": agree.worst_above,
            "worst_below": agree.worst_below,
            "outside_at_s": [round(t, 1) for t in agree.outside_times_s[:50]],
        },
    }
    sent = np.array(recorded.sent_s, dtype=float)
    sent_per_s = np.bincount(np.clip(sent[np.isfinite(sent)], 0, None).astype(int), minlength=horizon)[:horizon]
    return report, (live_t, live_ready, live_desired, agree, sent_per_s)


def _after(t: float | None, origin: float) -> float | None:
    return None if t is None else round(max(0.0, t - origin), 1)
