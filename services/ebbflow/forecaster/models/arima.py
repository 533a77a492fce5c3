"""ARIMA: order chosen by AIC at each fit (statsmodels), then its own recursions, O(1) per update.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import warnings
from collections import deque

import numpy as np

from ebbflow.forecaster.models.base import Model


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
