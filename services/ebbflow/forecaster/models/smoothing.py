"""Baselines and exponential smoothing: last value, moving average, EWMA, Holt-Winters.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import warnings
from collections import deque

import numpy as np

from ebbflow.forecaster.models.base import Model, interpolate


class LastValue(Model):
    name = "last_value"

    def __init__(self) -> None:
        self.last = math.nan

    def fit(self, history: np.ndarray) -> None:
        known = history[~np.isnan(history)]
        self.last = float(known[-1]) if len(known) else math.nan

    def update(self, value: float) -> None:
        if not math.isnan(value):
            self.last = value

    def predict(self, horizon: int) -> np.ndarray:
        return np.full(horizon, max(self.last, 0.0) if not math.isnan(self.last) else math.nan)


class MovingAverage(Model):
    def __init__(self, window: int, label: str = "") -> None:
        self.window = window
        self.name = f"moving_average_{label or window}"
        self.values: deque[float] = deque(maxlen=window)

    def fit(self, history: np.ndarray) -> None:
        self.values.clear()
        for value in history[-self.window :]:
            self.update(float(value))

    def update(self, value: float) -> None:
        self.values.append(value)  # NaNs take their slot, so the window stays a time window

    def predict(self, horizon: int) -> np.ndarray:
        known = [v for v in self.values if not math.isnan(v)]
        return np.full(horizon, max(sum(known) / len(known), 0.0) if known else math.nan)


class Ewma(Model):
    """Exponentially weighted mean; alpha chosen at fit by one-step squared error."""

    name = "ewma"
    min_history = 4
    ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self.level = math.nan

    def fit(self, history: np.ndarray) -> None:
        best = (math.inf, self.alpha)
        for alpha in self.ALPHAS:
            level, error = math.nan, 0.0
            for value in history:
                if math.isnan(value):
                    continue
                if not math.isnan(level):
                    error += (value - level) ** 2
                level = value if math.isnan(level) else level + alpha * (value - level)
            best = min(best, (error, alpha))
        self.alpha = best[1]
        self.level = math.nan
        for value in history:
            self.update(float(value))

    def update(self, value: float) -> None:
        if not math.isnan(value):
            self.level = value if math.isnan(self.level) else self.level + self.alpha * (value - self.level)

    def predict(self, horizon: int) -> np.ndarray:
        return np.full(horizon, max(self.level, 0.0) if not math.isnan(self.level) else math.nan)


class HoltWinters(Model):
    """Additive damped trend, optionally an additive season of `season` steps.

    Parameters come from statsmodels' ExponentialSmoothing at fit; the
    recursions then run here, one step per observation.
    """

    def __init__(self, season: int = 0) -> None:
        self.season = season
        self.name = f"holt_winters_{season}" if season else "holt"
        self.min_history = 3 * season if season else 10
        self.alpha, self.beta, self.gamma, self.phi = 0.5, 0.1, 0.1, 0.98
        self.level, self.trend = math.nan, 0.0
        self.seasonal = np.zeros(max(season, 1))
        self.position = 0  # index into `seasonal` of the next observation

    def fit(self, history: np.ndarray) -> None:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        y = interpolate(history)
        if np.isnan(y).all():
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ExponentialSmoothing(
                y, trend="add", damped_trend=True, seasonal="add" if self.season else None, seasonal_periods=self.season or None, initialization_method="estimated"
            )
            result = model.fit()
        params = result.params
        self.alpha = float(params["smoothing_level"])
        self.beta = float(params.get("smoothing_trend", 0.0) or 0.0)
        self.gamma = float(params.get("smoothing_seasonal", 0.0) or 0.0)
        self.phi = float(params.get("damping_trend", 1.0) or 1.0)
        self.level, self.trend = float(result.level[-1]), float(result.trend[-1])
        if self.season:
            # statsmodels' season array holds s_t for each t; the next observation uses s_{t+1-m}.
            self.seasonal = np.asarray(result.season[-self.season :], dtype=float).copy()
            self.position = 0

    def update(self, value: float) -> None:
        if math.isnan(self.level):
            if not math.isnan(value):
                self.level = value
            return
        season = self.seasonal[self.position] if self.season else 0.0
        previous_level = self.level
        if math.isnan(value):
            self.level = previous_level + self.phi * self.trend
            self.trend = self.phi * self.trend
        else:
            self.level = self.alpha * (value - season) + (1 - self.alpha) * (previous_level + self.phi * self.trend)
            self.trend = self.beta * (self.level - previous_level) + (1 - self.beta) * self.phi * self.trend
            if self.season:
                self.seasonal[self.position] = self.gamma * (value - previous_level - self.phi * self.trend) + (1 - self.gamma) * season
        if self.season:
            self.position = (self.position + 1) % self.season

    def predict(self, horizon: int) -> np.ndarray:
        if math.isnan(self.level):
            return np.full(horizon, math.nan)
        steps = np.arange(1, horizon + 1)
        damped = np.cumsum(self.phi**steps)
        forecast = self.level + damped * self.trend
        if self.season:
            forecast = forecast + self.seasonal[(self.position + steps - 1) % self.season]
        return np.maximum(forecast, 0.0)
