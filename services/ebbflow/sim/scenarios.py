"""Generated traces for the changes operators meet: steps, bursts, ramps, a daily cycle, on/off and a token-mix shift.

Each scenario is a piecewise-linear arrival rate over time (req/s at knots,
linear in between) and a token mix per stretch. Arrivals are an
inhomogeneous Poisson process drawn by thinning, seeded, so a scenario is
the same file on every machine; prompt and output tokens are lognormal
around each stretch's medians (clipped to 1-32k and 1-4k).

The change always falls in the evaluation split (the last 60 % of the
trace): ebbflow is tuned on a development split that has not seen it, as a
new operator's fleet has not. `step` is the issue's case: 20 minutes at 3
req/s with a 2-minute step to 13 req/s, replayed at shape 4x2 with TTFT <= 2 s.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebbflow.scheduler.capacity import Shape, Slo
from ebbflow.sim.workload import Requests


@dataclass(frozen=True)
class Mix:
    """Median prompt and output tokens (lognormal, sigma 0.6 and 0.5)."""

    prompt: float = 400.0
    output: float = 80.0


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    knots: tuple[tuple[float, float], ...]
    """(seconds, req/s): the rate is linear between knots; the last knot's time is the span."""
    mixes: tuple[tuple[float, Mix], ...] = ((0.0, Mix()),)
    """(from second, mix): the token mix in force from each time on."""
    min_replicas: int = 1
    shape: Shape = Shape(4, 2)
    slo: Slo = Slo(ttft_s=2.0, tpot_s=0.1, percentile=99.5)
    season_s: float = 0.0
    """A period the forecaster is told of (0: none), as an operator sets a daily season."""
    tie: float = 0.0
    """Relative tie allowed against a baseline's cheapest point (the goals allow 2 % where a scale-down or
    zero cannot be beaten by much: step down, on/off)."""

    @property
    def span_s(self) -> float:
        return self.knots[-1][0]

    def rate_at(self, t_s: np.ndarray) -> np.ndarray:
        times, rates = zip(*self.knots)
        return np.interp(t_s, times, rates)

    def generate(self, seed: int = 0) -> Requests:
        """The scenario's requests (seeded)."""
        rng = np.random.default_rng(seed)
        span = self.span_s
        top = max(r for _, r in self.knots)
        n = int(rng.poisson(top * span)) if top > 0 else 0
        candidates = np.sort(rng.uniform(0.0, span, n))
        keep = rng.random(n) * top < self.rate_at(candidates)
        times = candidates[keep]
        starts = np.array([s for s, _ in self.mixes])
        which = np.searchsorted(starts, times, side="right") - 1
        prompt_median = np.array([m.prompt for _, m in self.mixes])[which]
        output_median = np.array([m.output for _, m in self.mixes])[which]
        prompts = np.clip(np.round(prompt_median * rng.lognormal(0.0, 0.6, len(times))), 1, 32_000).astype(np.int64)
        outputs = np.clip(np.round(output_median * rng.lognormal(0.0, 0.5, len(times))), 1, 4_000).astype(np.int64)
        return Requests(self.name, times, prompts, outputs, True, span)


MINUTE = 60.0


def _steps(*phases: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """(minutes, req/s) phases as knots with (near-)vertical steps between them."""
    knots: list[tuple[float, float]] = []
    t = 0.0
    for minutes, rate in phases:
        if knots:
            knots.append((t + 0.001, rate))
        else:
            knots.append((t, rate))
        t += minutes * MINUTE
        knots.append((t, rate))
    return tuple(knots)


def _daily(span_min: float = 30.0, period_min: float = 10.0, low: float = 2.0, high: float = 12.0) -> tuple[tuple[float, float], ...]:
    """A compressed day: a night trough, a morning rise and an evening peak per period, sampled every 10 s."""
    t = np.arange(0.0, span_min * MINUTE + 1e-9, 10.0)
    phase = 2 * np.pi * t / (period_min * MINUTE)
    shape = 0.5 - 0.5 * np.cos(phase) + 0.15 * np.sin(2 * phase)
    shape = (shape - shape.min()) / (shape.max() - shape.min())
    return tuple((float(a), float(low + (high - low) * b)) for a, b in zip(t, shape))


def _on_off(cycles: int = 4, on_min: float = 2.5, off_min: float = 2.5, rate: float = 6.0) -> tuple[tuple[float, float], ...]:
    phases: list[tuple[float, float]] = []
    for _ in range(cycles):
        phases += [(on_min, rate), (off_min, 0.0)]
    return _steps(*phases)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("step", "3 req/s for 20 min with a 2-min step to 13 req/s at minute 12 (the issue's case)", _steps((12, 3.0), (2, 13.0), (6, 3.0))),
        Scenario("step_up", "3 req/s, then 13 req/s from minute 12 to the end (20 min)", _steps((12, 3.0), (8, 13.0))),
        Scenario("step_down", "13 req/s, then 3 req/s from minute 12 to the end (20 min)", _steps((12, 13.0), (8, 3.0)), tie=0.02),
        Scenario("spike", "4 req/s with a 30-s spike to 30 req/s at minute 13 (20 min)", _steps((13, 4.0), (0.5, 30.0), (6.5, 4.0))),
        Scenario("ramp", "2 req/s, a linear ramp to 14 req/s over minutes 10-18, then 14 req/s (22 min)", ((0.0, 2.0), (600.0, 2.0), (1080.0, 14.0), (1320.0, 14.0))),
        Scenario("daily", "a day compressed to 10 min (trough 2, peak 12 req/s), three of them (30 min)", _daily(), season_s=600.0),
        # With min_replicas 0, requests that arrive at zero replicas wait a cold start (30 s): 99.5 % within 2 s
        # needs replicas warm when each on-phase begins. The cycle is regular (a season of 5 min, three of them
        # in the development split), so a forecast can know it; the oracle shows what it costs.
        Scenario("on_off", "6 req/s for 2.5 min, nothing for 2.5 min, every 5 min for 40 min; min_replicas 0", _on_off(cycles=8),
                 min_replicas=0, tie=0.02, season_s=300.0),  # fmt: skip
        Scenario(
            "long_prompt",
            "6 req/s for 20 min; at minute 12 prompts move from ~400 to ~2,000 tokens and outputs from ~80 to ~200",
            _steps((20, 6.0)),
            mixes=((0.0, Mix(400.0, 80.0)), (12 * MINUTE, Mix(2000.0, 200.0))),
        ),
    )
}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}") from None


def write_csv(requests: Requests, path: Path) -> Path:
    """The requests as a trace file `ebbflow replay --trace` reads (arrival_s, prompt_tokens, output_tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["arrival_s", "prompt_tokens", "output_tokens"])
        for t, p, o in zip(requests.times.tolist(), requests.prompts.tolist(), requests.outputs.tolist()):
            out.writerow([f"{t:.4f}", p, o])
    return path
