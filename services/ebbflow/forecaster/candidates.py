"""What the selector keeps per candidate model: the forecasts it issued, its trailing losses, its calibration.

Every step each candidate issues one forecast (points and conformal
bounds for the next `horizon` steps); when the truth for a step arrives,
the forecasts issued 1..H steps earlier for it are scored and their errors
calibrate the next ones. These rings make that O(1) per step.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ebbflow.forecaster.conformal import Conformal
from ebbflow.forecaster.models.base import Model


class TrailingLosses:
    """Per quantile group and horizon step, the mean of the last `window` losses: numpy rings, O(1) per loss."""

    def __init__(self, groups: int, horizon: int, window: int) -> None:
        self.window = window
        self.ring = np.zeros((groups, horizon, window))
        self.total = np.zeros((groups, horizon))
        self.added = np.zeros((groups, horizon), dtype=int)

    def add(self, group: int, steps: np.ndarray, losses: np.ndarray) -> None:
        """One loss per step (steps distinct); the oldest of a full window drops out."""
        slots = self.added[group, steps] % self.window
        self.total[group, steps] += losses - self.ring[group, steps, slots]
        self.ring[group, steps, slots] = losses
        self.added[group, steps] += 1

    @property
    def counts(self) -> np.ndarray:
        return np.minimum(self.added, self.window)

    @property
    def means(self) -> np.ndarray:
        counts = self.counts
        return np.divide(self.total, counts, out=np.full(self.total.shape, math.nan), where=counts > 0)


class IssuedRing:
    """One candidate's forecasts of the last `horizon` steps: points, (quantile) bounds and the level they were
    scaled by, in rings indexed by issue. Every step issues exactly once, so the forecast issued k steps ago
    is the one that forecast this step at horizon step k."""

    def __init__(self, horizon: int, quantiles: int) -> None:
        self.horizon = horizon
        self.points = np.full((horizon, horizon), np.nan)
        self.bounds = np.full((horizon, horizon, quantiles), np.nan)
        self.typical = np.ones(horizon)
        self.issues = 0

    def add(self, points: np.ndarray, bounds: np.ndarray, typical: float) -> None:
        slot = self.issues % self.horizon
        self.points[slot], self.bounds[slot], self.typical[slot] = points, bounds, typical
        self.issues += 1

    def due(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For this step: the 0-based horizon steps it was forecast at (those with a point; the oldest forecast
        first), and the points, bounds and levels of those forecasts."""
        ages = np.arange(min(self.issues, self.horizon), 0, -1)
        slots = (self.issues - ages) % self.horizon
        points = self.points[slots, ages - 1]
        known = ~np.isnan(points)
        slots, steps = slots[known], ages[known] - 1
        return steps, points[known], self.bounds[slots, steps], self.typical[slots]

    @property
    def last_points(self) -> np.ndarray:
        return self.points[(self.issues - 1) % self.horizon] if self.issues else np.full(self.horizon, np.nan)

    @property
    def last_bounds(self) -> np.ndarray:
        return self.bounds[(self.issues - 1) % self.horizon] if self.issues else np.full(self.bounds.shape[1:], np.nan)


@dataclass
class Candidate:
    model: Model
    refit_every: int
    conformal: Conformal
    # Per quantile group (in GROUPS order) and horizon step, the mean pinball loss over recent targets.
    losses: TrailingLosses
    issued: IssuedRing
    fitted_at: int = -1
    # Per horizon step, the discounted sum and count of absolute errors of the point forecast (scaled by the
    # level), for Hedge.
    abs_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    abs_count: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def mean_abs_error(self, minimum: float) -> np.ndarray:
        """Per horizon step, the discounted mean absolute error; NaN with fewer than `minimum` (discounted) errors."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.abs_count >= minimum, self.abs_error / self.abs_count, math.nan)

    @property
    def name(self) -> str:
        return self.model.name
