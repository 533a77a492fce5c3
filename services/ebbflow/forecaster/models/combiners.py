"""Combinations of the other candidates' forecasts: the median, and Hedge, the error-weighted mix.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from ebbflow.forecaster.models.base import Model


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
