"""The model interface every candidate has, and interpolation over gaps for fits.

Pure: no clock, no I/O.
"""

from __future__ import annotations

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
