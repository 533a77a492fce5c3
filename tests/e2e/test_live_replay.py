"""`ebbflow replay --live` on a step of load: the live fleet must stay inside the simulator's band.

The stack is started as a user starts it (`ebbflow up` by absolute path, time-scaled), then a generated step
(nothing, a few requests a second for a minute of wall time, nothing) is driven through its router with
unchanged tritonclient calls, and the same trace is simulated under the same policy and clock. The forecaster
is set to a 2 s resolution and trusted after 10 bins, so its forecast is acted on during the step: a live-only
fault in it (a forecast that explodes after the change) puts live replicas above the simulator's band.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from ebbflow.live_replay import LiveReplayOptions, run_live_replay
from ebbflow.runtime.process import free_port
from ebbflow.sim.live import table
from tests.e2e.test_up import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

TIME_SCALE = 0.1
SPEEDUP = 1 / TIME_SCALE  # the whole emulated world runs 10x faster: service times, cold starts and the trace
STEP_RPS = 6.0  # wall-clock requests per second during the step
STEP_S = 60.0  # wall seconds
SCALE_DOWN_DELAY_S = 10.0
IDLE_S = 5.0
PANIC_HOLD_S = 10.0  # shorter than the step, so the wake-up's panic ends before the load does

CONFIG = f"""\
actuator:
  time_scale: {TIME_SCALE}
  exit_timeout_s: 3
forecaster:
  resolutions_s: [2.0, 60.0, 600.0]
scheduler:
  min_forecast_observations: 10
models:
  llm:
    min_replicas: 0
    max_replicas: 6
    target_in_flight_per_replica: 1
    scale_down_delay_s: {SCALE_DOWN_DELAY_S:g}
    scale_to_zero_idle_s: {IDLE_S:g}
    panic_hold_s: {PANIC_HOLD_S:g}
"""


def step_trace(path: Path, seed: int = 7) -> Path:
    """Poisson arrivals at STEP_RPS / SPEEDUP per emulated second for STEP_S * SPEEDUP emulated seconds; 200-token
    prompts and 300-token outputs (0.4 s of service on a replica at this time scale, so the step needs ~3)."""
    rng = np.random.default_rng(seed)
    rate = STEP_RPS / SPEEDUP
    times = np.cumsum(rng.exponential(1 / rate, size=int(rate * STEP_S * SPEEDUP * 1.5)))
    times = times[times < STEP_S * SPEEDUP]
    rows = ["timestamp,prompt_tokens,output_tokens", *(f"{t:.3f},200,300" for t in times)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_live_step_stays_in_the_simulators_band_and_returns_to_zero(tmp_path: Path):
    config = tmp_path / "ebbflow.yaml"
    config.write_text(CONFIG)
    state_dir = tmp_path / "state"
    up = Up(state_dir, config, free_port())
    children: list[int] = []
    try:
        up.wait_line("ready", 120)
        children = [p.pid for p in psutil.Process(up.process.pid).children(recursive=True)]
        options = LiveReplayOptions(trace=step_trace(tmp_path / "step.csv"), state_dir=state_dir, speedup=SPEEDUP, config=config)
        report = run_live_replay(options, tmp_path / "out", plots=True)
        children += [p.pid for p in psutil.Process(up.process.pid).children(recursive=True)]
    finally:
        code = up.stop(timeout_s=60)
    shown = table(report)
    print(shown, file=sys.stderr)
    print(json.dumps(report["agreement"]), file=sys.stderr)
    assert code == 0, "".join(up.output)
    leftovers = [pid for pid in set(children) if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not leftovers, f"processes left after SIGTERM: {leftovers}"
    assert (tmp_path / "out" / "replicas.png").stat().st_size > 0

    live, simulated, agree = report["live"], report["simulated"], report["agreement"]
    assert simulated["peak_ready"] >= 2, f"the simulator did not scale for the step, so its band means nothing\n{shown}"
    # Every criterion is checked, and every one that fails is named, so one run shows all that went wrong.
    failures = []
    if live["requests"] != report["requests"] or live["errors"]:
        failures.append(f"{live['errors']} client errors: {live['error_codes']}")
    # Live ready replicas inside the simulator's band: never more than one replica outside it, and outside at
    # most 15 % of the samples (two runs on a shared 2-core machine measured 78 % and 90 % inside; in the
    # first, a p90 forecast of 9.4 req/s right after a 6 req/s step ended scaled 4 -> 5 with nothing in flight).
    if agree["worst_above"] > 1 or agree["worst_below"] > 1 or agree["inside_share"] < 0.85:
        failures.append(
            f"live left the simulator's band: {100 * agree['inside_share']:.1f} % inside, worst {agree['worst_above']} above, "
            f"{agree['worst_below']} below, at {agree['outside_at_s']} s"
        )
    # Back at zero within the idle time plus the scale-down delay (and a cold start's worth of slack for the
    # last requests' service, a drain and the sampling).
    limit_s = IDLE_S + SCALE_DOWN_DELAY_S + report["cold_start_s"] + 5
    back = live["returned_to_floor_s"]
    if back is None or back > limit_s:
        failures.append(f"live not back at zero within {limit_s:.0f} s of the last request (back after: {back})")
    assert not failures, "\n".join(failures) + "\n" + shown
