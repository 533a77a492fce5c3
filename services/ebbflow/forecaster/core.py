"""Forecasting a demand series with calibrated quantiles: online conformal layer, rolling-origin selection.

The `Selector` sees a series one step at a time (NaN = missing). At each
step, for every candidate model:
1. the forecasts it issued 1..H steps ago for this step are scored (pinball
   loss of the quantiles as they were issued), and only then their errors join
   the calibration buffers: calibration never uses data a score has not
   already been computed on, so scores are out-of-sample;
2. the model takes the observation (O(1)) and is refitted on its schedule;
3. it issues a new point forecast, and quantiles = point + the empirical
   quantile of its recent scaled errors at that horizon step, with the level
   adapted online (adaptive conformal inference, Gibbs & Candes 2021) so
   coverage follows the target when the errors drift.
The forecast published is the selected candidate's; selection is by mean
pinball loss (p50 and p90) over a trailing window, and switches only when a
challenger beats the incumbent by a margin for `patience` consecutive steps.
A series too short for any scored comparison uses an explicit fallback, with
the reason.

Pure: no clock, no I/O. The same code runs in the service, the benchmark and
the tests.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ebbflow.forecaster.models import Arima, Ewma, HoltWinters, LagRidge, LastValue, Model, MovingAverage

QUANTILES = (0.5, 0.9, 0.99)
SCORED = (0.5, 0.9)  # selection's loss: mean pinball at these levels


def pinball(y: float, forecast: float, quantile: float) -> float:
    difference = y - forecast
    return max(quantile * difference, (quantile - 1) * difference)


@dataclass
class Conformal:
    """Quantiles from recent scaled errors of one model at one horizon step, with adaptive levels."""

    quantiles: tuple[float, ...] = QUANTILES
    window: int = 200
    gamma: float = 0.01
    errors: deque = field(default_factory=lambda: deque(maxlen=200))
    levels: dict[float, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.errors = deque(maxlen=self.window)
        self.levels = {q: q for q in self.quantiles}

    @staticmethod
    def scale(point: float, typical: float) -> float:
        """Errors scale with the level of demand (Poisson-like counts grow like its square root)."""
        return math.sqrt(max(point, 0.0) + 0.1 * typical + 1e-9) * math.sqrt(max(typical, 1e-9))

    def bounds(self, point: float, typical: float) -> dict[float, float]:
        if len(self.errors) < 10:
            return {q: point for q in self.quantiles} if q_ok(point) else {}
        errors = np.fromiter(self.errors, dtype=float)
        scale = self.scale(point, typical)
        return {q: max(point + float(np.quantile(errors, min(max(self.levels[q], 0.0), 1.0))) * scale, 0.0) for q in self.quantiles}

    def observe(self, y: float, point: float, typical: float, issued: dict[float, float]) -> None:
        """The truth for a forecast issued earlier: adapt levels on whether it was covered, then keep its error."""
        for q, bound in issued.items():
            if q != 0.5:
                missed = 1.0 if y > bound else 0.0
                self.levels[q] = self.levels[q] + self.gamma * (missed - (1 - q))
        self.errors.append((y - point) / self.scale(point, typical))


def q_ok(value: float) -> bool:
    return not math.isnan(value)


@dataclass
class Issued:
    """One candidate's forecast issued at a step: point and quantiles per horizon step."""

    step: int
    typical: float
    points: np.ndarray
    bounds: list[dict[float, float]]


@dataclass
class Candidate:
    model: Model
    refit_every: int
    conformal: list[Conformal]
    issued: deque = field(default_factory=deque)
    losses: deque = field(default_factory=deque)
    fitted_at: int = -1

    @property
    def name(self) -> str:
        return self.model.name


@dataclass(frozen=True)
class ForecastResult:
    """What the selector publishes at a step."""

    step: int
    method: str
    reason: str
    points: np.ndarray
    quantiles: dict[float, np.ndarray]


def default_models(horizon: int, season: int, max_history: int) -> list[Model]:
    """The candidate set: baselines, smoothing, ARIMA, and the learned model."""
    models: list[Model] = [LastValue(), MovingAverage(6), MovingAverage(30), Ewma(), HoltWinters(), Arima(), LagRidge(horizon=horizon, season=season)]
    if season and 3 * season <= max_history:
        models.append(HoltWinters(season))
    return models


class Selector:
    """Rolling-origin selection and online calibration over one series."""

    def __init__(
        self,
        horizon: int,
        season: int = 0,
        quantiles: Sequence[float] = QUANTILES,
        window: int = 60,
        margin: float = 0.05,
        patience: int = 5,
        refit_every: int = 60,
        max_history: int = 2000,
        calibration_window: int = 200,
        models: Callable[[], list[Model]] | None = None,
    ) -> None:
        self.horizon = horizon
        self.season = season
        self.quantiles = tuple(quantiles)
        self.window = window
        self.margin = margin
        self.patience = patience
        self.max_history = max_history
        self.history: deque[float] = deque(maxlen=max_history)
        self.step = -1
        make = models or (lambda: default_models(horizon, season, max_history))
        self.candidates = [
            Candidate(m, refit_every, [Conformal(self.quantiles, calibration_window) for _ in range(horizon)], deque(maxlen=horizon), deque(maxlen=window))
            for m in make()
        ]
        self.selected: Candidate | None = None
        self.reason = "no observations yet"
        self._streak: tuple[str, int] = ("", 0)
        self.negatives = 0

    # -- feeding ---------------------------------------------------------------------------------

    def typical(self) -> float:
        """A robust level of the recent series, for scaling errors."""
        known = [v for v in list(self.history)[-self.window :] if not math.isnan(v)]
        return float(np.median(known)) if known else 1.0

    def observe(self, value: float) -> ForecastResult:
        """Take the next observation (NaN if missing) and return the forecast issued after it."""
        if not math.isnan(value) and value < 0:
            self.negatives += 1  # demand cannot be negative: a broken input, read as missing
            value = math.nan
        self.step += 1
        self.history.append(value)
        if not math.isnan(value):
            for candidate in self.candidates:
                self._score(candidate, value)
        history = None
        typical = self.typical()
        for candidate in self.candidates:
            known = self.known_count()
            due = candidate.fitted_at < 0 or self.step - candidate.fitted_at >= candidate.refit_every
            if known >= candidate.model.min_history and due:
                if history is None:
                    history = np.asarray(self.history, dtype=float)
                try:
                    candidate.model.fit(history)
                except Exception:  # a fit that fails keeps the previous parameters
                    pass
                candidate.fitted_at = self.step
            else:
                candidate.model.update(value)
            self._issue(candidate, typical)
        self._select()
        return self.forecast()

    def known_count(self) -> int:
        return sum(1 for v in self.history if not math.isnan(v))

    def _score(self, candidate: Candidate, y: float) -> None:
        losses = []
        for issued in candidate.issued:
            h = self.step - issued.step  # 1..horizon
            if not 1 <= h <= self.horizon:
                continue
            point = float(issued.points[h - 1])
            if math.isnan(point):
                continue
            bounds = issued.bounds[h - 1]
            if bounds:
                losses.append(sum(pinball(y, bounds[q], q) for q in SCORED if q in bounds) / len(SCORED))
            candidate.conformal[h - 1].observe(y, point, issued.typical, bounds)
        if losses:
            scale = max(self.typical(), 1e-9)
            candidate.losses.append(sum(losses) / len(losses) / scale)

    def _issue(self, candidate: Candidate, typical: float) -> None:
        try:
            points = np.asarray(candidate.model.predict(self.horizon), dtype=float)
        except Exception:
            points = np.full(self.horizon, math.nan)
        bounds = [candidate.conformal[h].bounds(float(points[h]), typical) if not math.isnan(points[h]) else {} for h in range(self.horizon)]
        candidate.issued.append(Issued(self.step, typical, points, bounds))

    # -- choosing --------------------------------------------------------------------------------

    def _scored(self) -> list[tuple[float, Candidate]]:
        needed = max(10, self.window // 3)
        return sorted(((float(np.mean(c.losses)), c) for c in self.candidates if len(c.losses) >= needed), key=lambda pair: pair[0])

    def _select(self) -> None:
        scored = self._scored()
        if not scored:
            fallback = next((c for c in self.candidates if c.issued and not math.isnan(c.issued[-1].points[0])), None)
            self.selected = fallback
            known = self.known_count()
            self.reason = (
                f"fallback: {known} observation(s), too few scored forecasts to compare models yet"
                if fallback is not None
                else "no observations yet"
            )
            return
        best_loss, best = scored[0]
        current = self.selected
        current_loss = next((loss for loss, c in scored if c is current), None)
        if current is None or current_loss is None:
            self.selected, self._streak = best, ("", 0)
            self.reason = f"lowest pinball loss over the last {len(best.losses)} scored steps ({best_loss:.3f})"
            return
        if best is current:
            self._streak = ("", 0)
            self.reason = f"lowest pinball loss over the last {len(best.losses)} scored steps ({best_loss:.3f})"
            return
        if best_loss < (1 - self.margin) * current_loss:
            name, count = self._streak
            count = count + 1 if name == best.name else 1
            self._streak = (best.name, count)
            if count >= self.patience:
                self.selected, self._streak = best, ("", 0)
                self.reason = f"switched: pinball loss {best_loss:.3f} vs {current_loss:.3f} for {count} consecutive steps"
        else:
            self._streak = ("", 0)

    def forecast(self) -> ForecastResult:
        chosen = self.selected
        if chosen is None or not chosen.issued:
            return ForecastResult(self.step, "none", self.reason, np.full(self.horizon, math.nan), {})
        issued = chosen.issued[-1]
        quantiles = {q: np.array([b.get(q, math.nan) for b in issued.bounds]) for q in self.quantiles}
        if any(not b for b in issued.bounds):  # not calibrated yet: the point forecast for every level, said so
            quantiles = {q: issued.points.copy() for q in self.quantiles}
            reason = f"{self.reason}; quantiles uncalibrated (fewer than 10 errors yet)"
        else:
            reason = self.reason
        return ForecastResult(self.step, chosen.name, reason, issued.points.copy(), quantiles)


def rebin(values: np.ndarray, factor: int) -> np.ndarray:
    """Average consecutive groups of `factor` values (NaN-aware: a group with no data is NaN)."""
    usable = len(values) // factor * factor
    groups = np.asarray(values[:usable], dtype=float).reshape(-1, factor)
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(groups), axis=1)
        sums = np.nansum(groups, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
