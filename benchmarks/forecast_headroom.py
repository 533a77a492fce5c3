"""How much better than the simple baselines can any model forecast these traces? A hindsight ceiling.

forecast_accuracy.py measures what the forecaster does online. This script
asks a different question: on each trace, is there structure left for a
model to find? It fits direct multi-horizon models with hindsight of the
trace itself (2-fold cross-fitting: fit on one half, score on the other, and
the other way round), so each model has seen a whole half of the trace's own
pattern before it is scored, far more than the online forecaster ever has.

Models, per horizon, on the log-ratio target log(y[t+h] / y[t]):
- gradient boosting (scikit-learn HistGradientBoostingRegressor, absolute loss);
- ridge regression;
both on the forecaster's own learned-model features (LagRidge.features:
recent lags, short and long means, the same-time-of-day change over up to 7
previous days when the trace holds them, and the time of day).

Baselines on the same targets: last value, the benchmark's moving averages,
and EWMA with alpha tuned on the fitting half. Reported: MAE relative to the
series mean, and each model's MAE over the best baseline's. A ratio near 1
means the trace is close to a random walk at that horizon, and no forecaster
can beat the simple baselines by much; the forecaster's goal (b) asks for 0.9.

Series and horizons are exactly those of forecast_accuracy.py.

    .venv/bin/python benchmarks/forecast_headroom.py [--traces ../shared/traces] [--trace my.csv] [--only m-small]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forecast_accuracy import Series, add_trace_arguments, selected_series  # noqa: E402  (the same series and horizons)

from ebbflow.forecaster.models.base import interpolate  # noqa: E402
from ebbflow.forecaster.models.ridge import LagRidge  # noqa: E402


def design(series: Series, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The forecaster's own learned-model features at each origin t for step h (LagRidge.features), the log
    level at t, the log-ratio target for t + h (NaN where y[t+h] is a gap: targets stay as observed), and the
    offset c of log(y + c)."""
    model = LagRidge(horizon=h, season=series.season)
    log = model.prepare(series.values)
    assert log is not None
    origins = np.arange(model.first_origin, len(log) - h)
    features = model.features(log, origins, np.array([h]), 0)[:, 0, :]
    with np.errstate(invalid="ignore"):
        target = np.log(series.values[origins + h] + model.offset) - log[origins]
    return origins, features, log[origins], target, model.offset


def baselines(series: Series, origins: np.ndarray, h: int, fit: np.ndarray) -> dict[str, np.ndarray]:
    """Simple forecasts of y[t + h] at each origin; EWMA's alpha tuned on the `fit` origins."""
    y = interpolate(series.values)
    out = {"last_value": y[origins]}
    for window in series.ma_windows:
        out[f"moving_average_{window}"] = np.array([y[max(0, t - window + 1) : t + 1].mean() for t in origins])
    best = None
    for alpha in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9):
        level = np.empty(len(y))
        level[0] = y[0]
        for i in range(1, len(y)):
            level[i] = level[i - 1] + alpha * (y[i] - level[i - 1])
        truth = series.values[fit + h]
        ok = ~np.isnan(truth)
        error = float(np.mean(np.abs(level[fit][ok] - truth[ok])))
        if best is None or error < best[0]:
            best = (error, level)
    assert best is not None
    out["ewma"] = best[1][origins]
    return out


def headroom(series: Series, h: int) -> dict:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge

    origins, x, now, target, offset = design(series, h)
    usable = ~np.isnan(target) & ~np.isnan(series.values[origins])
    origins, x, now, target = origins[usable], x[usable], now[usable], target[usable]
    half = len(origins) // 2
    folds = [(np.arange(half), np.arange(half, len(origins))), (np.arange(half, len(origins)), np.arange(half))]
    predictions: dict[str, np.ndarray] = {}
    for fit, score in folds:
        models = {
            "gbm": HistGradientBoostingRegressor(loss="absolute_error", max_iter=150, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=20),
            "ridge": Ridge(alpha=1.0),
        }
        for name, model in models.items():
            mean, std = x[fit].mean(axis=0), x[fit].std(axis=0) + 1e-9
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit((x[fit] - mean) / std, target[fit])
                forecast = np.exp(now[score] + model.predict((x[score] - mean) / std)) - offset
            predictions.setdefault(name, np.full(len(origins), np.nan))[score] = np.maximum(forecast, 0.0)
        for name, forecast in baselines(series, origins[score], h, origins[fit]).items():
            predictions.setdefault(name, np.full(len(origins), np.nan))[score] = forecast
    truth = series.values[origins + h]
    mean = float(truth.mean())
    mae = {name: float(np.mean(np.abs(p - truth)) / mean) for name, p in predictions.items()}
    simple = min((m for m in mae if m not in ("gbm", "ridge")), key=mae.get)
    return {
        "series": series.name,
        "horizon_steps": h,
        "horizon_s": h * series.step_s,
        "n": len(origins),
        "rel_mae": mae,
        "best_simple": simple,
        "gbm_over_simple": mae["gbm"] / mae[simple],
        "ridge_over_simple": mae["ridge"] / mae[simple],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_trace_arguments(parser)
    args = parser.parse_args()
    all_series = selected_series(args)
    rows = [headroom(series, h) for series in all_series for h in series.horizons]
    print(json.dumps({"benchmark": "forecast_headroom", "rows": rows}))
    print(f"\n{'series':<44} {'horizon':>8} {'n':>5} {'best simple':>18} {'its MAE':>8} {'gbm':>7} {'ridge':>7}")
    for r in rows:
        print(
            f"{r['series']:<44} {r['horizon_s']:>7g}s {r['n']:>5} {r['best_simple']:>18} {r['rel_mae'][r['best_simple']]:8.3f} "
            f"{r['gbm_over_simple']:7.3f} {r['ridge_over_simple']:7.3f}"
        )
    print("\ngbm, ridge: MAE over the best simple baseline's, fitted with hindsight of the trace (2-fold cross-fitting); < 0.9 means goal (b) is reachable there")


if __name__ == "__main__":
    main()
