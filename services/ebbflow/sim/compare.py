"""Run every policy on one trace, fairly, and summarise.

Fairness rules:
- every policy drives the same fleet (bounds, cold start, shape, true service
  times with the same noise seed) and starts the evaluation with the same
  replicas;
- ebbflow's own parameters (forecast quantile, scale-down delay) are chosen
  on a development split (the first `dev_fraction` of the trace) and
  reported on the rest; the baselines are reported over their whole swept
  knob on the same evaluation split, so their best point is seen;
- the capacity curve the policies are given is measured (ebbflow.sim.profile)
  with the development split's token counts at the profile's nominal speed;
  the fleet may be slower (`Fleet.speed_factor`), which they are not told;
- the Dynamo-like planner gets the same kind of curve, measured at its own
  (swept) SLA, as its pre-deployment profiling would give it.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ebbflow.scheduler.capacity import CapacityModel, Slo
from ebbflow.sim.baselines.dynamo import ADJUSTMENT_INTERVAL_S, DynamoLike, arima_predictions
from ebbflow.sim.baselines.hpa import Hpa
from ebbflow.sim.baselines.kpa import Kpa
from ebbflow.sim.baselines.oracle import Ahead, find_oracle, static_peak, tighten
from ebbflow.sim.baselines.ray import RayServe
from ebbflow.sim.control import Controller
from ebbflow.sim.des import Fleet, Outcome, simulate
from ebbflow.sim.ebbflow_policy import Ebbflow, Forecasts, default_policy, forecasts
from ebbflow.sim.fluid import simulate_fluid
from ebbflow.sim.profile import capacity_model
from ebbflow.sim.workload import Counts, Requests, token_mix

POLICIES = ("ebbflow", "hpa", "kpa", "ray", "dynamo", "static_peak", "oracle", "oracle_tight")
SWEEPS: dict[str, tuple[float, ...]] = {
    "hpa": (1, 2, 3, 4, 6, 8, 12),  # target in-flight requests per pod
    "kpa": (2, 3, 4, 6, 8, 12, 16),  # per-pod concurrency target (70 % of it is used)
    "ray": (1, 2, 3, 4, 6, 8, 12),  # target_ongoing_requests
    "dynamo": (0.5, 0.75, 1.0, 1.5, 2.0),  # the planner's TTFT SLA, as a multiple of the comparison's SLO
}
KNOBS = {"hpa": "target in-flight/pod", "kpa": "concurrency", "ray": "target_ongoing_requests", "dynamo": "SLA TTFT x SLO"}
TUNING = {"forecast_quantile": (0.5, 0.9), "scale_down_delay_s": (30.0, 120.0), "calibration": (0.8, 0.9, 1.0, 1.1, 1.2, 1.35)}
"""ebbflow's settings tried on the development split (scored after the forecaster's first 30 bins)."""


@dataclass(frozen=True)
class Setup:
    fleet: Fleet
    slo: Slo
    target: float = 0.995
    """Attainment the oracle (and ebbflow's tuning) aims at."""
    bin_s: float = 10.0
    """Oracle schedule bins and ebbflow's forecast resolution (fluid mode: the simulation bin)."""
    dev_fraction: float = 0.4
    season: int = 0
    """Forecast season in bins (0: none)."""
    warmup_s: float = 60.0
    """Every policy starts with the same replicas and first decides after this much telemetry."""
    learn: bool = False
    """ebbflow corrects its capacity curves online from observed SLO misses (off: tuned on dev only)."""
    workers: int = 0
    """Processes for independent runs (the dev grid, the sweeps); 0: one per CPU."""
    forecast_s: float = 0.0
    """Resolution of ebbflow's forecast (0: bin_s); multi-day traces use 600 s, as the live forecaster's coarsest."""


@dataclass
class Result:
    policy: str
    knob: float | None
    outcome: Outcome
    attainment: float
    gpu_hours: float
    ttft_p50: float
    ttft_p99: float
    tpot_p99: float
    latency_p99: float
    seconds: float
    note: str = ""

    def row(self, oracle_gpu_hours: float, tight_gpu_hours: float = 0.0) -> dict:
        return {
            "policy": self.policy,
            "knob": self.knob,
            "attainment": round(self.attainment, 5),
            "gpu_hours": round(self.gpu_hours, 3),
            "vs_oracle": round(self.gpu_hours / oracle_gpu_hours, 3) if oracle_gpu_hours else None,
            "vs_oracle_tight": round(self.gpu_hours / tight_gpu_hours, 3) if tight_gpu_hours else None,
            "ttft_p50_s": _round(self.ttft_p50),
            "ttft_p99_s": _round(self.ttft_p99),
            "tpot_p99_s": _round(self.tpot_p99, 4),
            "latency_p99_s": _round(self.latency_p99),
            "actions": self.outcome.actions,
            "cold_starts": self.outcome.cold_starts,
            "sim_s": round(self.seconds, 2),
            "note": self.note,
        }


def _round(value: float, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _quantile(values: np.ndarray, weights: np.ndarray | None, q: float) -> float:
    """Weighted quantile; unfinished requests (NaN) count as infinitely late."""
    v = np.where(np.isnan(values), np.inf, values)
    if weights is None:
        return float(np.quantile(v, q)) if len(v) else math.nan
    order = np.argsort(v)
    cum = np.cumsum(weights[order])
    if not len(cum) or cum[-1] <= 0:
        return math.nan
    return float(v[order][np.searchsorted(cum, q * cum[-1])])


def summarise(policy: str, knob: float | None, outcome: Outcome, slo: Slo, seconds: float, note: str = "") -> Result:
    w = outcome.weights
    sel = outcome.scored
    ws = w[sel] if w is not None else None
    return Result(
        policy,
        knob,
        outcome,
        outcome.attainment(slo),
        outcome.gpu_s / 3600,
        _quantile(outcome.ttft_s[sel], ws, 0.5),
        _quantile(outcome.ttft_s[sel], ws, 0.99),
        _quantile(outcome.tpot_s[sel], ws, 0.99),
        _quantile(outcome.latency_s[sel], ws, 0.99),
        seconds,
        note,
    )


@dataclass
class Comparison:
    trace: str
    mode: str
    setup: Setup
    results: list[Result]
    demand: np.ndarray
    """Eval-split arrival rate per bin_s."""
    forecast: Forecasts | None
    tuned: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def get(self, policy: str) -> list[Result]:
        return [r for r in self.results if r.policy == policy]

    @property
    def oracle_gpu_hours(self) -> float:
        oracle = self.get("oracle")
        return oracle[0].gpu_hours if oracle else 0.0

    @property
    def tight_oracle_gpu_hours(self) -> float:
        tight = self.get("oracle_tight")
        return tight[0].gpu_hours if tight else 0.0

    def rows(self) -> list[dict]:
        return [r.row(self.oracle_gpu_hours, self.tight_oracle_gpu_hours) for r in self.results]

    def best(self, policy: str) -> Result | None:
        """A policy's point at the SLO target: its cheapest (swept) point reaching it; None if none does.
        Attainment above the target earns nothing: only GPU-hours are compared among points that reach it."""
        meeting = [r for r in self.get(policy) if r.attainment >= self.setup.target]
        return min(meeting, key=lambda r: r.gpu_hours) if meeting else None

    def closest(self, policy: str) -> Result | None:
        """A policy's point nearest the target: the cheapest reaching it, else the highest attainment."""
        points = self.get(policy)
        if not points:
            return None
        return self.best(policy) or max(points, key=lambda r: (r.attainment, -r.gpu_hours))

    def at_target(self) -> dict[str, dict | None]:
        """Per policy, the point its cost is taken from (knob, attainment, GPU-hours); None: it never reaches the target."""
        out: dict[str, dict | None] = {}
        for policy in dict.fromkeys(r.policy for r in self.results):
            r = self.best(policy)
            out[policy] = None if r is None else {"knob": r.knob, "attainment": round(r.attainment, 5), "gpu_hours": round(r.gpu_hours, 3)}
        return out

    def goals(self, tie: float = 0.0) -> list[dict]:
        """ebbflow against every baseline at the SLO target, static peak and the oracle.

        A baseline's cost is its cheapest swept point reaching the target; ebbflow must reach the target
        itself. ebbflow missing it is reported as a miss against every baseline; a baseline that never
        reaches it is reported as such, with no verdict (met None), never as a win. `tie`: the relative
        margin by which ebbflow may cost more than a baseline and still count as meeting the goal."""
        points = self.get("ebbflow")
        if not points:
            return []
        mine = points[0]
        target = self.setup.target
        reaches = mine.attainment >= target
        label = f"{100 * target:g} %"
        out = []
        for policy in SWEEPS:
            swept = self.get(policy)
            if not swept:
                continue
            entry: dict = {
                "against": policy,
                "goal": f"at >= {label} attainment, <= the GPU-hours of its cheapest point reaching {label}" + (f" (tie within {100 * tie:g} %)" if tie else ""),
                "ebbflow_attainment": round(mine.attainment, 5),
                "ebbflow_gpu_hours": round(mine.gpu_hours, 3),
            }
            cheapest = self.best(policy)
            if cheapest is None:
                top = max(swept, key=lambda r: r.attainment)
                entry.update(verdict=f"{policy} never reaches {label}", met=None,
                             note=f"its best point: {100 * top.attainment:.2f} % at {KNOBS[policy]} {top.knob:g}; no comparison, not a win")  # fmt: skip
            else:
                entry.update(baseline_knob=cheapest.knob, baseline_attainment=round(cheapest.attainment, 5), baseline_gpu_hours=round(cheapest.gpu_hours, 3),
                             ratio=round(mine.gpu_hours / cheapest.gpu_hours, 3))  # fmt: skip
                if not reaches:
                    entry.update(verdict=f"ebbflow misses {label}", met=False)
                else:
                    met = mine.gpu_hours <= cheapest.gpu_hours * (1 + tie)
                    entry.update(verdict="met" if met else "NOT met", met=met)
            out.append(entry)
        static = self.get("static_peak")
        if static:
            s = static[0]
            met = reaches and mine.gpu_hours <= 0.6 * s.gpu_hours
            out.append({
                "against": "static_peak",
                "goal": f">= {label} attainment at <= 0.60x its GPU-hours",
                "ratio": round(mine.gpu_hours / s.gpu_hours, 3),
                "ebbflow_attainment": round(mine.attainment, 5),
                "verdict": ("met" if met else "NOT met") if reaches else f"ebbflow misses {label}",
                "met": met,
            })
        oracle = self.get("oracle")
        if oracle:
            o = oracle[0]
            ratio = mine.gpu_hours / o.gpu_hours if o.gpu_hours else math.inf
            peak, oracle_peak = int(mine.outcome.replicas.max(initial=0)), int(o.outcome.replicas.max(initial=0))
            met = reaches and ratio <= 1.3
            out.append({
                "against": "oracle",
                "goal": f">= {label} attainment at <= 1.10x (smooth) / 1.3x (bursty) its GPU-hours",
                "ratio": round(ratio, 3),
                "ebbflow_attainment": round(mine.attainment, 5),
                "oracle_attainment": round(o.attainment, 5),
                "peak_replicas": peak,
                "oracle_peak_replicas": oracle_peak,
                "peak_ratio": round(peak / oracle_peak, 3) if oracle_peak else None,
                "verdict": ("met" if met else "NOT met") if reaches else f"ebbflow misses {label}",
                "met": met,
                "met_1.10": reaches and ratio <= 1.10,
                "met_1.3": met,
            })
        tight = self.get("oracle_tight")
        if tight:
            t = tight[0]
            ratio = mine.gpu_hours / t.gpu_hours if t.gpu_hours else math.inf
            met = reaches and ratio <= 1.15
            out.append({
                "against": "oracle_tight",
                "goal": f">= {label} attainment at <= 1.15x (smooth) its GPU-hours (the target over the whole evaluation, not per bin)",
                "ratio": round(ratio, 3),
                "ebbflow_attainment": round(mine.attainment, 5),
                "oracle_attainment": round(t.attainment, 5),
                "verdict": ("met" if met else "NOT met") if reaches else f"ebbflow misses {label}",
                "met": met,
            })
        return out


_PENDING: tuple = ()
"""(runner, controllers) for the worker processes of run_all (inherited by fork, never pickled)."""


def _run_pending(index: int) -> tuple[Outcome, float]:
    runner, controllers = _PENDING
    return _timed_run(runner, controllers[index])


def run_all(runner: "_Runner", controllers: list[Controller], workers: int) -> list[tuple[Outcome, float]]:
    """Simulate independent controllers, over `workers` forked processes when there are several of each
    (the runs share nothing; each is deterministic for the fleet's seed, so the results do not depend on it)."""
    global _PENDING
    if workers < 2 or len(controllers) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_timed_run(runner, c) for c in controllers]
    _PENDING = (runner, controllers)
    try:
        with ProcessPoolExecutor(min(workers, len(controllers)), mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_run_pending, range(len(controllers))))
    finally:
        _PENDING = ()


def _timed_run(runner: "_Runner", controller: Controller) -> tuple[Outcome, float]:
    started = time.perf_counter()
    return runner.run(controller), time.perf_counter() - started


class _Runner:
    """One split of one trace in one mode: simulate(controller) -> Outcome."""

    def __init__(self, data: Requests | Counts, setup: Setup, truth: CapacityModel, initial: int, score_from_s: float = 0.0) -> None:
        self.data, self.setup, self.truth, self.initial = data, setup, truth, initial
        self.fluid = isinstance(data, Counts)
        self.score_from_s = score_from_s

    @property
    def span_s(self) -> float:
        return self.data.span_s

    def run(self, controller: Controller) -> Outcome:
        warmup = self.setup.warmup_s
        if self.fluid:
            outcome = simulate_fluid(self.data, self.setup.fleet, self.truth, controller, initial=self.initial, warmup_s=warmup)
            start = np.arange(len(outcome.scored)) * self.data.step_s
        else:
            outcome = simulate(self.data, self.setup.fleet, controller, span_s=self.span_s, initial=self.initial, warmup_s=warmup, slo=self.setup.slo)
            start = self.data.times
        if self.score_from_s:
            outcome.scored &= start >= self.score_from_s
        return outcome

    def bin_misses(self, outcome: Outcome, slo: Slo, step_s: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
        met = outcome.met(slo)
        if self.fluid:
            per = max(1, int(round(step_s / self.data.step_s)))
            w = outcome.weights * outcome.scored
            k = np.minimum(np.arange(len(w)) // per, bins - 1)
            return np.bincount(k, weights=w, minlength=bins), np.bincount(k, weights=w * (1 - met), minlength=bins)
        k = np.minimum((self.data.times // step_s).astype(np.int64), bins - 1)
        return np.bincount(k, minlength=bins).astype(float), np.bincount(k, weights=1.0 - met, minlength=bins)


def compare(
    data: Requests | Counts,
    setup: Setup,
    policies: tuple[str, ...] = POLICIES,
    sweeps: dict[str, tuple[float, ...]] = SWEEPS,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Every policy on `data` (Requests: discrete-event; Counts: fluid); see the module docstring."""
    say = progress or (lambda _: None)
    step = setup.bin_s
    forecast_step = setup.forecast_s or step
    grain = max(step, forecast_step)
    cut = round(data.span_s * setup.dev_fraction / grain) * grain
    dev, evaluation = data.split(cut)
    fleet, slo = setup.fleet, setup.slo
    workers = setup.workers or os.cpu_count() or 1
    prompts, outputs = token_mix(dev)  # the development split's own mix, also in fluid mode
    aim = replace(slo, percentile=setup.target * 100)

    def measure(objective: Slo, speed_factor: float = 1.0) -> CapacityModel:
        return capacity_model(fleet.profile, fleet.shape, objective, prompts, outputs, speed_factor, fleet.noise_sigma, seed=fleet.seed)

    started = time.perf_counter()
    capacity = measure(aim)
    truth = capacity if fleet.speed_factor == 1.0 else measure(aim, fleet.speed_factor)
    limits = ", ".join(f"{c.pool}: {c.rate_at(aim.target):.3g}" for c in capacity.curves.curves)
    say(f"capacity curves measured in {time.perf_counter() - started:.1f} s; req/s per replica at {aim.describe()} by pool size: {limits}")
    def opening(part: Requests | Counts) -> int:
        """Replicas every policy starts with: enough for the busiest bin before anyone could add one."""
        early = part.rates(step)[: max(1, int(math.ceil((setup.warmup_s + fleet.cold_s) / step)))]
        return min(fleet.max_replicas, max(fleet.min_replicas, capacity.replicas_for(float(np.nan_to_num(early).max(initial=0.0)))))

    initial = opening(evaluation)
    runner = _Runner(evaluation, setup, truth, initial)
    dev_initial = opening(dev)
    dev_runner = _Runner(dev, setup, truth, dev_initial, score_from_s=30 * forecast_step)
    results: list[Result] = []
    comparison = Comparison(data.name, "fluid" if runner.fluid else "discrete-event", setup, results, evaluation.rates(step), None)
    held = len(evaluation) if isinstance(evaluation, Requests) else float(np.nansum(evaluation.counts))
    comparison.details["split"] = {"cut_s": cut, "evaluation_span_s": evaluation.span_s, "evaluation_requests": int(held)}

    def record(policy: str, knob: float | None, controller: Controller, note: str = "") -> Result:
        started = time.perf_counter()
        outcome = runner.run(controller)
        result = summarise(policy, knob, outcome, slo, time.perf_counter() - started, note)
        results.append(result)
        say(f"{policy}{'' if knob is None else f' {knob:g}'}: attainment {result.attainment:.4f}, {result.gpu_hours:.2f} GPU-h")
        return result

    if {"oracle", "oracle_tight", "static_peak"} & set(policies):
        bins = int(math.ceil(evaluation.span_s / step))
        demand = np.nan_to_num(evaluation.rates(step))[:bins]
        demand = np.concatenate([demand, np.zeros(bins - len(demand))])
        floor = np.maximum(fleet.min_replicas, np.ceil(demand / truth.max_rps)).astype(np.int64)

        def run_plan(plan: np.ndarray) -> tuple[Outcome, np.ndarray, np.ndarray]:
            outcome = runner.run(Ahead(plan, step, fleet.cold_s))
            total, missed = runner.bin_misses(outcome, slo, step, bins)
            return outcome, total, missed

        started = time.perf_counter()
        reach = Ahead(np.ones(1, dtype=np.int64), step, fleet.cold_s).reach
        plan, outcome, rounds = find_oracle(floor, run_plan, setup.target, fleet.max_replicas, progress=lambda r: say(f"oracle search: round {r}"), reach=reach, min_replicas=fleet.min_replicas)
        if "oracle" in policies:
            results.append(summarise("oracle", None, outcome, slo, time.perf_counter() - started, f"{rounds} simulated rounds"))
            say(f"oracle: attainment {results[-1].attainment:.4f}, {results[-1].gpu_hours:.2f} GPU-h")
        if "oracle_tight" in policies:
            started = time.perf_counter()
            _, tight, runs = tighten(plan, run_plan, setup.target, floor=floor, reach=reach, min_replicas=fleet.min_replicas, progress=lambda r: say(f"tighter oracle: {r} simulations"))
            results.append(summarise("oracle_tight", None, tight, slo, time.perf_counter() - started, f"{runs} simulations from the per-bin oracle"))
            say(f"oracle_tight: attainment {results[-1].attainment:.4f}, {results[-1].gpu_hours:.2f} GPU-h")
        if "static_peak" in policies:
            record("static_peak", float(plan.max()), static_peak(plan, step), "the oracle's largest bin, all the time")

    if "ebbflow" in policies:
        rates = np.concatenate([dev.rates(forecast_step), evaluation.rates(forecast_step)])
        started = time.perf_counter()
        forecast = forecasts(rates, forecast_step, horizon=12, season=setup.season)
        say(f"forecasts: {len(rates)} bins of {forecast_step:g} s in {time.perf_counter() - started:.1f} s")
        dev_bins = len(dev.rates(forecast_step))
        dev_forecast = Forecasts(forecast.step_s, forecast.views[:dev_bins])
        eval_forecast = forecast.shifted(dev_bins)
        comparison.forecast = eval_forecast
        grid = list(itertools.product(*TUNING.values()))
        candidates = [
            Ebbflow(
                default_policy(forecast_quantile=q, scale_down_delay_s=delay, min_replicas=fleet.min_replicas, max_replicas=fleet.max_replicas),
                replace(capacity, calibration=calibration),
                dev_forecast,
                fleet.cold_s,
                learn=setup.learn,
            )
            for q, delay, calibration in grid
        ]
        started = time.perf_counter()
        outcomes = run_all(dev_runner, candidates, workers)
        say(f"ebbflow tuned on the development split: {len(grid)} settings in {time.perf_counter() - started:.1f} s")
        tried = [(outcome.attainment(slo), outcome.gpu_s, *setting) for (outcome, _), setting in zip(outcomes, grid)]
        meeting = [t for t in tried if t[0] >= setup.target]
        chosen = min(meeting, key=lambda t: t[1]) if meeting else max(tried, key=lambda t: (t[0], -t[1]))
        _, _, q, delay, calibration = chosen
        comparison.tuned = {
            "forecast_quantile": q,
            "scale_down_delay_s": delay,
            "calibration": calibration,
            "dev_attainment": round(chosen[0], 5),
            "dev_gpu_hours": round(chosen[1] / 3600, 3),
            "grid": [
                {"forecast_quantile": tq, "scale_down_delay_s": td, "calibration": tc, "attainment": round(a, 5), "gpu_hours": round(g / 3600, 3)}
                for a, g, tq, td, tc in tried
            ],
        }
        policy = default_policy(forecast_quantile=q, scale_down_delay_s=delay, min_replicas=fleet.min_replicas, max_replicas=fleet.max_replicas)
        model = replace(capacity, calibration=calibration)
        controller = Ebbflow(policy, model, eval_forecast, fleet.cold_s, learn=setup.learn)
        record("ebbflow", None, controller, f"q={q:g}, scale-down delay {delay:g} s, calibration {calibration:g} (tuned on dev)")
        comparison.details["calibration"] = controller.calibrations

    swept: list[tuple[str, float, Controller]] = []
    for knob in sweeps.get("hpa", ()) if "hpa" in policies else ():
        swept.append(("hpa", knob, Hpa(knob)))
    for knob in sweeps.get("kpa", ()) if "kpa" in policies else ():
        swept.append(("kpa", knob, Kpa(knob, min_scale=fleet.min_replicas)))
    for knob in sweeps.get("ray", ()) if "ray" in policies else ():
        swept.append(("ray", knob, RayServe(knob, min_replicas=fleet.min_replicas)))
    if "dynamo" in policies and sweeps.get("dynamo"):
        started = time.perf_counter()
        history = np.concatenate([dev.rates(ADJUSTMENT_INTERVAL_S), evaluation.rates(ADJUSTMENT_INTERVAL_S)])
        predictions = arima_predictions(history)[len(dev.rates(ADJUSTMENT_INTERVAL_S)) :]
        say(f"dynamo ARIMA: {len(history)} intervals in {time.perf_counter() - started:.1f} s")
        for knob in sweeps["dynamo"]:
            swept.append(("dynamo", knob, DynamoLike(capacity.for_ttft(aim.ttft_s * knob), predictions)))
    for (policy, knob, _), (outcome, seconds) in zip(swept, run_all(runner, [c for _, _, c in swept], workers)):
        result = summarise(policy, knob, outcome, slo, seconds)
        results.append(result)
        say(f"{policy} {knob:g}: attainment {result.attainment:.4f}, {result.gpu_hours:.2f} GPU-h")
    return comparison
