"""Point forecasters of one demand series, as pure code.

Every model has the same life: `fit(history)` (on a schedule: estimates
parameters and sets the state from the history), `update(value)` (one new
observation, O(1), NaN allowed and meaning "missing"), `predict(horizon)`
(point forecasts for the next `horizon` steps, never negative). Fitting may
use statsmodels or scikit-learn; updating and predicting are a few numpy
operations, so a forecast costs microseconds, not a refit.

Missing data is never read as zero: recursions skip the correction step, and
fits interpolate over gaps.

Two more candidates combine the others' forecasts (the selector sets their
points each step, after the others'): the median, and Hedge, the
error-weighted mix that selection falls back on. `default_models` is the
candidate set the forecaster runs.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from typing import Sequence

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


class LagRidge(Model):
    """A learned model: per horizon step, ridge regression of the log change from now to then.

    Target: log(y[t+h] + c) - log(y[t] + c), with c a twentieth of the series'
    mean (finite through zeros, negligible at busy levels). Features, all
    relative to log(y[t] + c): the last `lags` values, the means of the last
    6 and 30 steps and, once the history holds `days` + 1 seasons, the change
    from the same phase to phase + h on each of the previous `days` seasons
    (raw and smoothed over 5 steps) with the target's phase. Squared loss in
    log space forecasts the median of a log-symmetric series, the right point
    for absolute error on bursty, skewed demand. Direct strategy (one model
    per step): no compounding of errors over the horizon. Fitting is one
    closed-form solve per step; predicting is a dot product per step.
    """

    name = "lag_ridge"
    min_history = 60
    MAX_DAYS = 7
    PENALTY = 1.0

    def __init__(self, horizon: int, season: int = 0, lags: int = 12) -> None:
        self.horizon, self.season, self.lags = horizon, season, lags
        self.days = 0
        self.offset = 1.0
        self.coef: np.ndarray | None = None  # (horizon x features + 1), standardised features; last column the intercept
        self.scale: tuple[np.ndarray, np.ndarray] | None = None  # per step: feature means and stds
        self.log: deque[float] = deque(maxlen=self._memory(self.MAX_DAYS))
        self.steps_seen = 0

    def _memory(self, days: int) -> int:
        return max(self.lags, 30, days * self.season + 3) + 1

    def features(self, log: np.ndarray, origins: np.ndarray, steps: np.ndarray, first: int) -> np.ndarray:
        """(origins x steps x features) at these origins (indices into log, gap-filled) for these horizon steps
        (1-based); log[0] is the series' step `first`."""
        sums = np.concatenate([[0.0], np.cumsum(log)])

        def mean(last: np.ndarray, width: int) -> np.ndarray:  # mean of log[last - width + 1 : last + 1]
            return (sums[last + 1] - sums[last + 1 - width]) / width

        now = log[origins]
        common = [log[origins - k] - now for k in range(self.lags - 1, 0, -1)] + [mean(origins, 6) - now, mean(origins, 30) - now]
        rows = np.repeat(np.column_stack(common)[:, None, :], len(steps), axis=1)
        ahead = origins[:, None] + steps[None, :]
        by_step = []
        for d in range(1, self.days + 1):
            back = d * self.season
            by_step += [log[ahead - back] - log[origins - back][:, None], mean(ahead - back + 2, 5) - mean(origins - back + 2, 5)[:, None]]
        if self.season:
            phase = 2 * np.pi * ((first + ahead) % self.season) / self.season
            by_step += [np.sin(phase), np.cos(phase), np.sin(2 * phase), np.cos(2 * phase)]
        return np.concatenate([rows, np.stack(by_step, axis=2)], axis=2) if by_step else rows

    def prepare(self, history: np.ndarray) -> np.ndarray | None:
        """The gap-filled log series a fit works on (None when nothing is known); sets the offset, how many
        previous seasons the features look at, and the recent values predictions start from."""
        y = interpolate(np.maximum(history, 0.0))
        self.steps_seen = len(y)
        if np.isnan(y).all():
            return None
        self.offset = max(0.05 * float(np.mean(y)), 1e-6)
        log = np.log(y + self.offset)
        # Seasonal features look h + 2 steps past a phase a whole season back: only while that is still the past.
        self.days = min(self.MAX_DAYS, len(y) // self.season - 1) if self.season >= self.horizon + 3 else 0
        while self.days > 0 and len(y) - self._memory(self.days) < 4 * self.season:  # too few rows with that many days
            self.days -= 1
        self.log = deque(log[-self._memory(self.MAX_DAYS) :], maxlen=self._memory(self.MAX_DAYS))
        return log

    @property
    def first_origin(self) -> int:
        """The first index of the series with the history its features need."""
        return self._memory(self.days) - 1

    def fit(self, history: np.ndarray) -> None:
        self.coef = None
        log = self.prepare(history)
        if log is None:
            return
        n, start = len(log), self.first_origin
        if n - start - self.horizon < self.lags + 8:  # rows per step; the penalty keeps a short fit sane
            return
        features = self.features(log, np.arange(start, n - 1), np.arange(1, self.horizon + 1), 0)
        coefs, means, stds = [], [], []
        for h in range(1, self.horizon + 1):
            x = features[: n - h - start, h - 1, :]
            target = log[start + h : n] - log[start : n - h]
            mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
            z = np.column_stack([(x - mean) / std, np.ones(len(x))])
            penalty = self.PENALTY * np.eye(z.shape[1])
            penalty[-1, -1] = 0.0  # the intercept is not shrunk
            coefs.append(np.linalg.solve(z.T @ z + penalty, z.T @ target))
            means.append(mean)
            stds.append(std)
        self.coef, self.scale = np.array(coefs), (np.array(means), np.array(stds))

    def update(self, value: float) -> None:
        previous = self.log[-1] if self.log else math.nan
        self.log.append(math.log(max(value, 0.0) + self.offset) if not math.isnan(value) else previous)
        self.steps_seen += 1

    def predict(self, horizon: int) -> np.ndarray:
        if self.coef is None or self.scale is None or len(self.log) < self._memory(self.days) or math.isnan(self.log[-1]):
            return np.full(horizon, math.nan)
        log = np.asarray(self.log)
        x = self.features(log, np.array([len(log) - 1]), np.arange(1, self.horizon + 1), self.steps_seen - len(log))[0]
        z = (x - self.scale[0]) / self.scale[1]
        out = np.exp(log[-1] + np.einsum("hf,hf->h", z, self.coef[:, :-1]) + self.coef[:, -1]) - self.offset
        if horizon > len(out):
            out = np.concatenate([out, np.full(horizon - len(out), out[-1])])
        return np.maximum(out[:horizon], 0.0)


# -- combinations of the other candidates' forecasts ------------------------------------------------


class Aggregate(Model):
    """A combination of the other candidates: the selector sets its points each step, after theirs."""

    def __init__(self) -> None:
        self.points = np.zeros(0)

    def update(self, value: float) -> None:
        pass

    def fit(self, history: np.ndarray) -> None:
        pass

    def predict(self, horizon: int) -> np.ndarray:
        return self.points[:horizon] if len(self.points) >= horizon else np.full(horizon, math.nan)


class Median(Aggregate):
    """The median of the other candidates' point forecasts."""

    name = "median_ensemble"


class Hedge(Aggregate):
    """Exponentially weighted aggregation (Hedge) of the other candidates' point forecasts, per horizon step.

    Each model's weight at step h is exp(-rate * L / mean L), where L is its discounted absolute error at that
    step (scaled by the series level): a model 5 % worse than average keeps exp(-rate / 20) of the weight of an
    average one. A convex mix of forecasts errs no more than the same mix of their errors, so the aggregate
    tracks the best model in hindsight without the switching of a hard choice, and often beats it.
    """

    name = "hedge"

    def __init__(self, rate: float = 20.0) -> None:
        super().__init__()
        self.rate = rate
        self.weights = np.zeros((0, 0))
        """The last combination's weights, (models x horizon), each column summing to 1 (0 where none)."""

    def combine(self, forecasts: np.ndarray, errors: np.ndarray) -> np.ndarray:
        """forecasts, errors: (models x horizon); a model with a NaN forecast or error takes no weight at that
        step. NaN where no model can be weighed."""
        usable = ~np.isnan(forecasts) & ~np.isnan(errors)
        count = usable.sum(axis=0)
        error = np.where(usable, errors, 0.0)
        mean = np.divide(error.sum(axis=0), count, out=np.zeros(count.shape), where=count > 0)
        relative = np.divide(error, mean, out=np.zeros_like(error), where=mean > 0)
        logits = np.where(usable, -self.rate * relative, -np.inf)
        top = logits.max(axis=0)
        weights = np.where(usable, np.exp(logits - np.where(np.isfinite(top), top, 0.0)), 0.0)
        total = weights.sum(axis=0)
        mixed = (weights * np.where(usable, forecasts, 0.0)).sum(axis=0)
        self.weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
        return np.divide(mixed, total, out=np.full(total.shape, math.nan), where=total > 0)


def default_models(horizon: int, season: int, max_history: int, ma_windows: Sequence[int] = (6, 30)) -> list[Model]:
    """The candidate set: baselines, smoothing, ARIMA, and the learned model."""
    models: list[Model] = [LastValue(), *(MovingAverage(w) for w in ma_windows), Ewma(), HoltWinters(), Arima(), LagRidge(horizon=horizon, season=season)]
    if season and 3 * season <= max_history:
        models.append(HoltWinters(season))
    return models
