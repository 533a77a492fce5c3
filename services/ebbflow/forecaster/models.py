"""Point forecasters of one demand series, as pure code.

Every model has the same life: `fit(history)` (on a schedule: estimates
parameters and sets the state from the history), `update(value)` (one new
observation, O(1), NaN allowed and meaning "missing"), `predict(horizon)`
(point forecasts for the next `horizon` steps, never negative). Fitting may
use statsmodels or scikit-learn; updating and predicting are a few numpy
operations, so a forecast costs microseconds, not a refit.

Missing data is never read as zero: recursions skip the correction step, and
fits interpolate over gaps.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np


def interpolate(y: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaNs (ends held flat); all-NaN stays NaN."""
    y = np.asarray(y, dtype=float)
    known = ~np.isnan(y)
    if known.all() or not known.any():
        return y.copy()
    index = np.arange(len(y))
    return np.interp(index, index[known], y[known])


class Model:
    """Base: a name, how much history it needs, and the three calls."""

    name = "model"
    min_history = 1

    def fit(self, history: np.ndarray) -> None:
        for value in history:
            self.update(float(value))

    def update(self, value: float) -> None:
        raise NotImplementedError

    def predict(self, horizon: int) -> np.ndarray:
        raise NotImplementedError


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


class Arima(Model):
    """ARIMA(p, d, q) with d in {0, 1}: order by AIC over a small set at fit (statsmodels), then own recursions.

    Dynamo's planner defaults to ARIMA; this is the same family without the
    per-update refit.
    """

    name = "arima"
    min_history = 30
    ORDERS = ((1, 0, 0), (2, 0, 1), (0, 1, 1), (1, 1, 1), (2, 1, 2))
    FIT_WINDOW = 500  # recent points the parameters are estimated on

    def __init__(self) -> None:
        self.order = (1, 0, 0)
        self.mean = 0.0
        self.ar = np.zeros(0)
        self.ma = np.zeros(0)
        self.last = math.nan  # last level (for d = 1)
        self.z: deque[float] = deque(maxlen=4)  # recent (differenced, de-meaned) values, newest last
        self.e: deque[float] = deque(maxlen=4)  # recent innovations
        self.fitted = False

    def fit(self, history: np.ndarray) -> None:
        from statsmodels.tsa.arima.model import ARIMA

        y = np.asarray(history, dtype=float)[-self.FIT_WINDOW :]
        known = y[~np.isnan(y)]
        if len(known) < self.min_history:
            return
        if np.ptp(known) < 1e-9:  # constant: the mean is the whole model
            self.order, self.mean, self.ar, self.ma, self.fitted = (0, 0, 0), float(known[0]), np.zeros(0), np.zeros(0), True
            self.z.clear()
            self.e.clear()
            self.z.append(0.0)
            return
        best = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for order in self.ORDERS:
                try:
                    result = ARIMA(y, order=order, trend="c" if order[1] == 0 else "n").fit()
                except Exception:  # a singular fit: try the next order
                    continue
                if best is None or result.aic < best[0]:
                    best = (result.aic, order, result)
        if best is None:
            return
        _, self.order, result = best
        self.fitted = True
        names = list(result.model.param_names)
        params = dict(zip(names, np.asarray(result.params, dtype=float)))
        self.mean = params.get("const", 0.0)
        self.ar = np.array([params[f"ar.L{i}"] for i in range(1, self.order[0] + 1)])
        self.ma = np.array([params[f"ma.L{i}"] for i in range(1, self.order[2] + 1)])
        self.z.clear()
        self.e.clear()
        self.last = math.nan
        for value in y[-200:]:
            self.update(float(value))

    def _one_step(self) -> float:
        z = list(self.z)[::-1]
        e = list(self.e)[::-1]
        ar = sum(c * z[i] for i, c in enumerate(self.ar) if i < len(z))
        ma = sum(c * e[i] for i, c in enumerate(self.ma) if i < len(e))
        return ar + ma

    def update(self, value: float) -> None:
        if not self.fitted:  # no parameters yet: nothing to carry
            return
        if self.order[1] == 1:
            if math.isnan(self.last):
                self.last = value
                return
            observed = value - self.last if not math.isnan(value) else math.nan
        else:
            observed = value - self.mean if not math.isnan(value) else math.nan
        expected = self._one_step()
        if math.isnan(observed):  # missing: carry the expectation, no innovation
            observed, innovation = expected, 0.0
        else:
            innovation = observed - expected
        self.z.append(observed)
        self.e.append(innovation)
        if self.order[1] == 1:
            self.last = self.last + observed

    def predict(self, horizon: int) -> np.ndarray:
        if not self.fitted or (self.order[1] == 1 and math.isnan(self.last)) or (self.order[1] == 0 and not self.z):
            return np.full(horizon, math.nan)
        z, e = deque(self.z, maxlen=4), deque(self.e, maxlen=4)
        saved = self.z, self.e
        out = np.empty(horizon)
        level = self.last
        try:
            self.z, self.e = z, e
            for step in range(horizon):
                value = self._one_step()
                self.z.append(value)
                self.e.append(0.0)
                if self.order[1] == 1:
                    level += value
                    out[step] = level
                else:
                    out[step] = value + self.mean
        finally:
            self.z, self.e = saved
        return np.maximum(out, 0.0)


@dataclass
class LagRidge(Model):
    """A learned model: ridge regression on lag, seasonal-lag and calendar features, one output per horizon step.

    Fitted in log1p space (demand is skewed and positive); direct multi-output
    strategy, so no error compounding over the horizon.
    """

    horizon: int
    season: int = 0
    lags: int = 12
    name: str = "lag_ridge"
    min_history: int = 60
    history: deque = field(default_factory=lambda: deque(maxlen=1))
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    scale: tuple[np.ndarray, np.ndarray] | None = None
    steps_seen: int = 0

    def __post_init__(self) -> None:
        self.history = deque(maxlen=max(self.lags, self.season + self.horizon) + 1)

    def _features(self, past: np.ndarray, t: int) -> np.ndarray:
        """Features at origin t from `past` (log1p values, NaN-filled), newest last."""
        lags = past[-self.lags :]
        parts = [lags, [lags.mean(), lags[-3:].mean()]]
        if self.season and len(past) >= self.season:
            # The value one season before each target step.
            parts.append([past[len(past) - self.season + h] if h < self.season else past[-1] for h in range(self.horizon)])
            phase = 2 * math.pi * ((t + 1) % self.season) / self.season
            parts.append([math.sin(phase), math.cos(phase)])
        return np.concatenate([np.asarray(p, dtype=float) for p in parts])

    def fit(self, history: np.ndarray) -> None:
        from sklearn.linear_model import Ridge

        y = np.log1p(np.maximum(interpolate(history), 0.0))
        self.history.clear()
        self.steps_seen = len(y)
        for value in y:
            self.history.append(value)
        if np.isnan(y).all():
            return
        start = max(self.lags, self.season if self.season else 0)
        rows, targets = [], []
        for t in range(start, len(y) - self.horizon):
            rows.append(self._features(y[: t + 1], t))
            targets.append(y[t + 1 : t + 1 + self.horizon])
        if len(rows) < 2 * (self.lags + 4):
            self.coef = None
            return
        x, target = np.asarray(rows), np.asarray(targets)
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        model = Ridge(alpha=1.0).fit((x - mean) / std, target)
        self.coef, self.intercept, self.scale = model.coef_, model.intercept_, (mean, std)

    def update(self, value: float) -> None:
        previous = self.history[-1] if self.history else 0.0
        self.history.append(math.log1p(max(value, 0.0)) if not math.isnan(value) else previous)
        self.steps_seen += 1

    def predict(self, horizon: int) -> np.ndarray:
        if self.coef is None or self.scale is None or len(self.history) < self.lags:
            return np.full(horizon, math.nan)
        x = (self._features(np.asarray(self.history), self.steps_seen - 1) - self.scale[0]) / self.scale[1]
        out = np.expm1(self.coef @ x + self.intercept)
        if horizon > len(out):
            out = np.concatenate([out, np.full(horizon - len(out), out[-1])])
        return np.maximum(out[:horizon], 0.0)
