"""LagRidge, the learned model: per horizon step, a ridge regression of the log change from now to then.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ebbflow.forecaster.models.base import Model, interpolate


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
