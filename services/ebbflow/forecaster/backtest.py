"""Backtests of the forecaster: a series replayed through a Selector, every method scored on the same targets.

Rolling origin: each step's forecasts are issued before its truth is seen,
so every score is out-of-sample. The forecaster's Backtest RPC and
benchmarks/forecast_accuracy.py run these.

Pure: no I/O; a clock is passed in only to time the updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ebbflow.forecaster.selection import Selector


def pinball(y: float, forecast: float, quantile: float) -> float:
    difference = y - forecast
    return max(quantile * difference, (quantile - 1) * difference)


@dataclass(frozen=True)
class Score:
    """One method's rolling-origin result at one horizon step."""

    method: str
    horizon: int
    scored: int
    relative_mae: float
    pinball_p50: float
    pinball_p90: float
    coverage_p90: float


def replay(selector: Selector, values: Sequence[float], clock: Callable[[], float] | None = None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[tuple[float, bool]]]:
    """Feed a series through a selector; per method ('selected' included) the p50 and p90 issued at each step.

    With a clock, also the duration of each update and whether it refitted.
    """
    n, horizon = len(values), selector.horizon
    names = [c.name for c in selector.candidates]
    forecasts = {name: (np.full((n, horizon), np.nan), np.full((n, horizon), np.nan)) for name in [*names, "selected"]}
    q50, q90 = selector.quantiles.index(0.5), selector.quantiles.index(0.9)
    timings: list[tuple[float, bool]] = []
    for t, value in enumerate(values):
        fitted_before = [c.fitted_at for c in selector.candidates]
        started = clock() if clock else 0.0
        result = selector.observe(float(value))
        if clock:
            timings.append((clock() - started, [c.fitted_at for c in selector.candidates] != fitted_before))
        for candidate in selector.candidates:
            bounds = candidate.issued.last_bounds
            if not np.isnan(bounds).any():
                forecasts[candidate.name][0][t] = bounds[:, q50]
                forecasts[candidate.name][1][t] = bounds[:, q90]
        if result.quantiles:
            forecasts["selected"][0][t] = result.quantiles[0.5]
            forecasts["selected"][1][t] = result.quantiles[0.9]
    return forecasts, timings


def score_replay(values: Sequence[float], forecasts: dict[str, tuple[np.ndarray, np.ndarray]], horizons: Sequence[int], warmup: int) -> list[Score]:
    """Every method on the same targets (known truth, a forecast from every method), per horizon step.

    A method with forecasts at fewer than half of the known targets (a model that needs more history than a
    short series holds) is left out of the comparison, with a score of n = 0, rather than shrinking every
    other method's targets to the few it covers.
    """
    y = np.asarray(values, dtype=float)
    known = y[warmup:][~np.isnan(y[warmup:])]
    mean = float(known.mean()) if len(known) and known.mean() > 0 else 1.0
    scores = []
    for h in horizons:
        origins = np.arange(warmup, len(y) - h)
        if not len(origins):
            continue
        truth = y[origins + h]
        usable = ~np.isnan(truth)
        targets = max(int(usable.sum()), 1)
        compared = {method for method, (p50, _) in forecasts.items() if np.sum(usable & ~np.isnan(p50[origins, h - 1])) >= targets / 2}
        for method in compared:
            usable &= ~np.isnan(forecasts[method][0][origins, h - 1])
        for method, (p50s, p90s) in forecasts.items():
            p50, p90, target = p50s[origins, h - 1][usable], p90s[origins, h - 1][usable], truth[usable]
            count = len(target) if method in compared else 0
            if not count:
                scores.append(Score(method, h, 0, math.nan, math.nan, math.nan, math.nan))
                continue
            scores.append(
                Score(
                    method=method,
                    horizon=h,
                    scored=count,
                    relative_mae=float(np.mean(np.abs(target - p50)) / mean),
                    pinball_p50=float(np.mean(np.maximum(0.5 * (target - p50), -0.5 * (target - p50))) / mean),
                    pinball_p90=float(np.mean(np.maximum(0.9 * (target - p90), -0.1 * (target - p90))) / mean),
                    coverage_p90=float(np.mean(target <= p90)),
                )
            )
    return scores
