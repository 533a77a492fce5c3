"""Generated scenarios, scoring at the SLO target, and the issue's goals on every scenario (in the simulator).

The suite at the end replays each scenario with ebbflow, swept HPA, KPA and Ray Serve, and the oracle, and
asserts the goals: >= 99.5 % attainment at <= 1.3x the oracle's GPU-hours and at most the cheapest HPA, KPA
and Ray point reaching 99.5 % (2 % tie allowed on step_down and on_off); on the step scenario, peak replicas
<= 1.2x the oracle's peak. A baseline that never reaches 99.5 % has nothing to beat.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from ebbflow.emulator.service_time import load_profile
from ebbflow.scheduler.capacity import Slo
from ebbflow.sim.compare import Comparison, Result, Setup
from ebbflow.sim.des import Fleet, Outcome
from ebbflow.sim.replay import COLOURS, Progress, ReplayOptions, run_replay, table
from ebbflow.sim.scenarios import SCENARIOS, scenario, write_csv
from ebbflow.sim.workload import requests_from_trace
from ebbflow.traces import load_trace

# ---- the generated traces ------------------------------------------------------------------------


def test_scenarios_are_seeded_and_follow_their_rate() -> None:
    step = scenario("step")
    a, b, c = step.generate(0), step.generate(0), step.generate(1)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.prompts, b.prompts)
    assert not np.array_equal(a.times, c.times)
    per_minute = a.counts(60.0) / 60.0
    assert len(per_minute) == 20
    assert np.all(np.abs(per_minute[:12] - 3.0) < 1.0) and np.all(np.abs(per_minute[12:14] - 13.0) < 2.0)
    assert np.all(np.abs(per_minute[14:] - 3.0) < 1.0)
    # The change falls in the evaluation split (the last 60 %), which ebbflow is not tuned on.
    assert 0.4 * step.span_s <= 12 * 60


def test_on_off_is_silent_when_off_and_long_prompt_moves_its_mix() -> None:
    on_off = SCENARIOS["on_off"].generate(0)
    minute = on_off.counts(30.0)
    assert minute[5:10].sum() == 0 and minute[:5].min() > 0  # 2.5 min on (5 bins of 30 s), then nothing
    assert SCENARIOS["on_off"].min_replicas == 0
    shift = SCENARIOS["long_prompt"].generate(0)
    before, after = shift.times < 720, shift.times >= 720
    assert np.median(shift.prompts[after]) > 4 * np.median(shift.prompts[before])
    assert np.median(shift.outputs[after]) > 2 * np.median(shift.outputs[before])


def test_a_written_scenario_reads_back_as_the_same_trace(tmp_path: Path) -> None:
    requests = SCENARIOS["spike"].generate(3)
    back = requests_from_trace(load_trace(write_csv(requests, tmp_path / "spike.csv")))
    assert len(back) == len(requests) and back.tokens_known
    assert np.allclose(back.times, requests.times - requests.times[0], atol=1e-3)  # the loader counts from the first
    assert np.array_equal(back.prompts, requests.prompts)


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'stepp'; choose from step, step_up"):
        scenario("stepp")


# ---- scoring at the SLO target ---------------------------------------------------------------------


def fake_result(policy: str, knob: float | None, attainment: float, gpu_hours: float, peak: int = 4) -> Result:
    outcome = Outcome(policy, np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1, dtype=bool), gpu_hours * 3600, np.array([1, peak]), np.array([1, peak]), 0, 0)
    return Result(policy, knob, outcome, attainment, gpu_hours, 0.1, 0.5, 0.05, 1.0, 0.0)


def comparison_of(*results: Result, target: float = 0.995) -> Comparison:
    setup = Setup(Fleet(load_profile("llama2-7b-a100")), Slo(ttft_s=2.0), target=target)
    return Comparison("t", "discrete-event", setup, list(results), np.zeros(1), None)


def goal(c: Comparison, against: str, tie: float = 0.0) -> dict:
    return next(g for g in c.goals(tie) if g["against"] == against)


def test_attainment_above_the_target_is_not_credit() -> None:
    # HPA's 99.99 % point costs 3.0, its 99.6 % point 1.0: its cost is 1.0, and ebbflow at 1.2 loses.
    c = comparison_of(fake_result("ebbflow", None, 1.0, 1.2), fake_result("hpa", 1, 0.9999, 3.0), fake_result("hpa", 4, 0.996, 1.0), fake_result("hpa", 8, 0.97, 0.5))
    g = goal(c, "hpa")
    assert g["baseline_gpu_hours"] == 1.0 and g["baseline_knob"] == 4
    assert g["met"] is False and g["verdict"] == "NOT met"
    assert c.best("hpa").knob == 4  # type: ignore[union-attr]
    assert c.at_target()["hpa"] == {"knob": 4, "attainment": 0.996, "gpu_hours": 1.0}


def test_ebbflow_below_the_target_misses_however_cheap() -> None:
    c = comparison_of(fake_result("ebbflow", None, 0.99, 0.2), fake_result("kpa", 2, 0.996, 1.0), fake_result("oracle", None, 0.996, 0.5))
    assert goal(c, "kpa")["met"] is False and goal(c, "kpa")["verdict"] == "ebbflow misses 99.5 %"
    assert goal(c, "oracle")["met_1.3"] is False
    assert "ebbflow misses 99.5 %" in table({"name": "t", "mode": "m", "requests": 1, "span_h": 1, "mean_rps": 1, "shape": "1x1", "slo": {"ttft_s": 2.0}, "results": [], "goals": c.goals()})


def test_a_baseline_that_never_reaches_the_target_is_reported_not_beaten() -> None:
    c = comparison_of(fake_result("ebbflow", None, 0.999, 2.0), fake_result("ray", 1, 0.99, 1.0), fake_result("ray", 2, 0.95, 0.8))
    g = goal(c, "ray")
    assert g["met"] is None and g["verdict"] == "ray never reaches 99.5 %" and "not a win" in g["note"]
    assert c.best("ray") is None and c.closest("ray").knob == 1  # type: ignore[union-attr]
    assert c.at_target()["ray"] is None


def test_tie_and_the_oracle_peak() -> None:
    c = comparison_of(fake_result("ebbflow", None, 0.996, 1.015, peak=13), fake_result("kpa", 3, 0.996, 1.0), fake_result("oracle", None, 0.996, 0.9, peak=10))
    assert goal(c, "kpa")["met"] is False and goal(c, "kpa", tie=0.02)["met"] is True
    oracle = goal(c, "oracle")
    assert oracle["met_1.3"] is True and oracle["peak_ratio"] == 1.3


def test_plots_give_ebbflow_its_own_colour_and_progress_keeps_long_lines_whole() -> None:
    assert list(COLOURS.values()).count(COLOURS["ebbflow"]) == 1
    stream = io.StringIO()
    progress = Progress(3, stream)
    line = "trace.csv: 28,185 requests over 1.00 h (7.83 req/s); times from column 'TIMESTAMP' (datetimes); prompt, output token counts"
    progress(line)
    assert line in stream.getvalue()


# ---- the goals on every scenario -------------------------------------------------------------

SUITE = ("ebbflow", "hpa", "kpa", "ray", "oracle")

# The goals that ebbflow does not reach yet, with what the simulator measured. Strict: a scenario that starts
# meeting its goals fails here until its entry is removed, so this list can only shrink honestly.
NOT_MET_YET = {
    "step": "61 % attainment: a 4.3x step against 30 s cold starts queues ~260 requests past a 2 s TTFT before any new "
    "replica is ready; the queue then drains at the SLO rate's slack (TTFT p99 40 s)",
    "step_up": "79 % attainment, as for step",
    "step_down": "1.31x the oracle's GPU-hours (goal 1.3x): the scale-down delay tuned on the development split holds "
    "the old fleet after the drop",
    "spike": "74 % attainment at 1.51x the oracle: the backlog a spike leaves is carried, not drained",
    "ramp": "95 % attainment: the forecast lags the ramp by about a lead",
    "on_off": "2.91x the oracle and 1.6x HPA's cheapest point: every on phase starts cold, so tuning keeps replicas "
    "through the 2.5 min gaps; the 5 min season is not used to pre-warm",
    "long_prompt": "53 % attainment: the simulated ebbflow keeps the curves of the development split's short prompts "
    "(the live scheduler re-measures when the mix moves)",
}


@pytest.mark.timeout(480)  # a hang guard: a whole replay with swept baselines, ~1 min alone, several on a loaded machine
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NOT_MET_YET[n])) if n in NOT_MET_YET else n for n in SCENARIOS]
)
def test_scenario_goals(name: str) -> None:
    s = SCENARIOS[name]
    _, report = run_replay(ReplayOptions(Path(name), scenario=name, policies=SUITE, shape=s.shape, slo=s.slo, min_replicas=s.min_replicas))
    goals = {g["against"]: g for g in report["goals"]}
    oracle = goals["oracle"]
    failed = []
    if oracle["ebbflow_attainment"] < 0.995:
        failed.append(f"attainment {100 * oracle['ebbflow_attainment']:.2f} % < 99.5 %")
    if oracle["ratio"] > 1.3:
        failed.append(f"{oracle['ratio']:.2f}x the oracle's GPU-hours > 1.3x")
    for baseline in ("hpa", "kpa", "ray"):
        g = goals[baseline]
        if g["met"] is False and g["ebbflow_attainment"] >= 0.995:
            failed.append(f"{g['ratio']:.2f}x {baseline}'s cheapest point reaching 99.5 % ({baseline} knob {g['baseline_knob']:g}, {g['baseline_gpu_hours']} GPU-h)")
    if name == "step" and (oracle["peak_ratio"] is None or oracle["peak_ratio"] > 1.2):
        failed.append(f"peak {oracle['peak_replicas']} replicas > 1.2x the oracle's {oracle['oracle_peak_replicas']}")
    assert not failed, f"{name}: " + "; ".join(failed) + "\n" + table(report)
