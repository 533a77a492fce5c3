"""Forecasting a demand series with calibrated quantiles: rolling-origin selection over candidate models.

The `Selector` sees a series one step at a time (NaN = missing). At each
step, for every candidate model:
1. the forecasts it issued 1..H steps ago for this step are scored (pinball
   loss of the quantiles as they were issued), and only then their errors join
   the calibration buffers: calibration never uses data a score has not
   already been computed on, so scores are out-of-sample;
2. the model takes the observation (O(1)) and is refitted on its schedule;
3. it issues a new point forecast, and quantiles from the conformal layer
   (ebbflow.forecaster.conformal: its recent scaled errors, adaptive levels,
   and the guards against a change of regime).
The forecast published is the selected candidate's; selection is by mean
pinball loss (p50 and p90) over a trailing window. Hedge (the error-weighted
mix of the others, ebbflow.forecaster.models.combiners) is the default; a challenger
takes over only when it beats the one in force by a margin for `patience`
consecutive steps (a whole selection window by default), and Hedge takes back
over as soon as it is no worse.
A series too short for any scored comparison uses an explicit fallback, with
the reason. `Quality` scores what was published, for the service's metrics.

Pure: no clock, no I/O. The same code runs in the service, the benchmark and
the tests.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ebbflow.forecaster.candidates import Candidate, IssuedRing, TrailingLosses
from ebbflow.forecaster.conformal import QUANTILES, Conformal
from ebbflow.forecaster.models.arima import Arima
from ebbflow.forecaster.models.base import Model
from ebbflow.forecaster.models.combiners import Hedge, Median
from ebbflow.forecaster.models.ridge import LagRidge
from ebbflow.forecaster.models.smoothing import Ewma, HoltWinters, LastValue, MovingAverage

# The choice is made apart for the median and for the upper quantiles, each by its own pinball loss:
# the model that best tracks the centre is often not the one whose upper tail is best calibrated.
GROUPS = {"median": 0.5, "upper": 0.9}
HEDGE_MIN_ERRORS = 10.0
"""Scored errors (discounted) a model needs at a horizon step before Hedge gives it weight."""
# Before models can be compared: a combination first, then smoothers, the last value last.
FALLBACK_ORDER = ("median_ensemble", "ewma", "holt", "last_value")


@dataclass(frozen=True)
class ForecastResult:
    """What the selector publishes at a step."""

    step: int
    method: str
    reason: str
    points: np.ndarray
    quantiles: dict[float, np.ndarray]
    methods: tuple[str, ...] = ()  # the model behind each horizon step
    calibrated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per horizon step: the quantiles come from calibrated errors (else they are the point forecast)."""
    untrusted_reason: str = ""
    """Empty when the forecast may be acted on; else why not (too young, or not calibrated yet)."""


def default_models(horizon: int, season: int, max_history: int, ma_windows: Sequence[int] = (6, 30)) -> list[Model]:
    """The candidate set: baselines, smoothing, ARIMA, and the learned model."""
    models: list[Model] = [LastValue(), *(MovingAverage(w) for w in ma_windows), Ewma(), HoltWinters(), Arima(), LagRidge(horizon=horizon, season=season)]
    if season and 3 * season <= max_history:
        models.append(HoltWinters(season))
    return models


def describe(methods: Sequence[str]) -> str:
    """'ewma' or 'ewma@1-3,holt_winters_144@4-12'."""
    runs: list[tuple[str, int, int]] = []
    for step, method in enumerate(methods, start=1):
        if runs and runs[-1][0] == method:
            runs[-1] = (method, runs[-1][1], step)
        else:
            runs.append((method, step, step))
    if len(runs) == 1:
        return runs[0][0]
    return ",".join(f"{m}@{a}" if a == b else f"{m}@{a}-{b}" for m, a, b in runs)


class Selector:
    """Rolling-origin selection (per horizon step) and online calibration over one series."""

    def __init__(
        self,
        horizon: int,
        season: int = 0,
        quantiles: Sequence[float] = QUANTILES,
        window: int = 60,
        margin: float = 0.05,
        patience: int | None = None,
        refit_every: int = 60,
        max_history: int = 2000,
        calibration_window: int = 200,
        models: Callable[[], list[Model]] | None = None,
        rate_floor: float = 0.0,
        trust_after: int = 30,
    ) -> None:
        self.horizon = horizon
        self.rate_floor = rate_floor
        """The smallest level errors are scaled by: one arrival per bin (1 / bin seconds) for a rate series."""
        self.trust_after = trust_after
        """Known observations before a forecast may be acted on."""
        self.calibration_window = calibration_window
        self.rises = np.zeros(horizon)
        self.season = season
        self.quantiles = tuple(quantiles)
        self.window = window
        self.margin = margin
        # A challenger must win through a whole window of its own before it takes a step from Hedge: on the real
        # traces every shorter patience (5, 15, 30 steps) lost more by switching than it won (benchmarks/
        # forecast_accuracy.py).
        self.patience = patience if patience is not None else window
        self.max_history = max_history
        self.history: deque[float] = deque(maxlen=max_history)
        self._known: deque[bool] = deque(maxlen=max_history)
        self.known = 0
        self.step = -1
        make = models or (lambda: default_models(horizon, season, max_history))
        self.median = Median()
        self.hedge = Hedge()
        self._discount = 1.0 - 1.0 / window
        self.candidates = [
            Candidate(
                m,
                refit_every,
                Conformal(horizon, self.quantiles, calibration_window),
                TrailingLosses(len(GROUPS), horizon, window),
                IssuedRing(horizon, len(self.quantiles)),
                abs_error=np.zeros(horizon),
                abs_count=np.zeros(horizon),
            )
            for m in [*make(), self.median, self.hedge]  # Hedge last: the selection finds it there
        ]
        self.aggregates = (self.median, self.hedge)
        self.selected: dict[str, list[Candidate | None]] = {group: [None] * horizon for group in GROUPS}
        self._streak: dict[str, list[tuple[str, int]]] = {group: [("", 0)] * horizon for group in GROUPS}
        self.reason = "no observations yet"
        self.negatives = 0
        self.published: deque[ForecastResult] = deque(maxlen=horizon)
        self.quality = Quality(window=max(500, window * horizon))

    # -- feeding ---------------------------------------------------------------------------------

    def typical(self) -> float:
        """The recent mean level (robust to bursty zeros), for scaling errors."""
        last = list(itertools.islice(reversed(self.history), self.window))[::-1]  # not a copy of the whole history
        recent = [v for v in last if not math.isnan(v)]
        return max(float(np.mean(recent)), self.rate_floor) if recent else max(1.0, self.rate_floor)

    def _rises(self) -> np.ndarray:
        """Per horizon step h (1-based), the largest rise y[t + k] - y[t], k <= h, over the calibration window."""
        recent = np.fromiter(itertools.islice(reversed(self.history), self.calibration_window + self.horizon), dtype=float)[::-1]
        rises = np.zeros(self.horizon)
        for k in range(1, min(self.horizon, len(recent) - 1) + 1):
            differences = recent[k:] - recent[:-k]
            if not np.isnan(differences).all():
                rises[k - 1] = max(float(np.nanmax(differences)), 0.0)
        return np.maximum.accumulate(rises)

    def observe(self, value: float) -> ForecastResult:
        """Take the next observation (NaN if missing) and return the forecast issued after it."""
        if not math.isnan(value) and value < 0:
            self.negatives += 1  # demand cannot be negative: a broken input, read as missing
            value = math.nan
        self.step += 1
        if len(self._known) == self._known.maxlen and self._known[0]:
            self.known -= 1
        self.history.append(value)
        self._known.append(not math.isnan(value))
        self.known += not math.isnan(value)
        typical = self.typical()
        if not math.isnan(value):
            self.rises = self._rises()
            for candidate in self.candidates:
                self._score(candidate, value, typical)
            self.quality.score(self.published, self.step, value, typical)
        history = None
        others = []
        for candidate in self.candidates:
            if candidate.model in self.aggregates:
                continue
            due = candidate.fitted_at < 0 or self.step - candidate.fitted_at >= candidate.refit_every
            if self.known >= candidate.model.min_history and due:
                if history is None:
                    history = np.asarray(self.history, dtype=float)
                try:
                    candidate.model.fit(history)
                except Exception:  # a fit that fails keeps the previous parameters
                    pass
                candidate.fitted_at = self.step
            else:
                candidate.model.update(value)
            others.append(self._issue(candidate, typical))
        complete = [points for points in others if not np.isnan(points).any()]
        self.median.points = np.median(np.array(complete), axis=0) if len(complete) >= 3 else np.full(self.horizon, math.nan)
        bases = [c for c in self.candidates if c.model not in self.aggregates]
        errors = np.array([c.mean_abs_error(HEDGE_MIN_ERRORS) for c in bases])
        self.hedge.points = self.hedge.combine(np.array(others), errors)
        for candidate in self.candidates:
            if candidate.model in self.aggregates:
                self._issue(candidate, typical)
        self._select()
        result = self.forecast()
        self.published.append(result)
        return result

    def _score(self, candidate: Candidate, y: float, typical: float) -> None:
        steps, points, bounds, typicals = candidate.issued.due()
        if not len(steps):
            return
        scale = max(typical, 1e-9)
        candidate.abs_error[steps] = candidate.abs_error[steps] * self._discount + np.abs(y - points) / scale
        candidate.abs_count[steps] = candidate.abs_count[steps] * self._discount + 1.0
        complete = ~np.isnan(bounds).any(axis=1)
        if complete.any():
            for group, level in enumerate(GROUPS.values()):
                difference = y - bounds[complete][:, self.quantiles.index(level)]
                candidate.losses.add(group, steps[complete], np.maximum(level * difference, (level - 1) * difference) / scale)
        candidate.conformal.observe(steps, y, points, typicals, bounds)

    def _issue(self, candidate: Candidate, typical: float) -> np.ndarray:
        try:
            points = np.asarray(candidate.model.predict(self.horizon), dtype=float)
        except Exception:
            points = np.full(self.horizon, math.nan)
        candidate.issued.add(points, candidate.conformal.bounds(points, typical, self.rises), typical)
        return points

    # -- choosing --------------------------------------------------------------------------------

    def _select(self) -> None:
        needed = max(10, self.window // 6)  # scored targets before a model's mean loss counts
        losses = np.array([c.losses.means for c in self.candidates])  # (candidates x groups x steps)
        calibrated = np.array([~np.isnan(c.issued.last_bounds[:, 0]) for c in self.candidates])  # (candidates x steps)
        eligible = (np.array([c.losses.counts for c in self.candidates]) >= needed) & calibrated[:, None, :]
        outcomes = {
            group: [self._select_one(group, h, losses[:, g, h], eligible[:, g, h]) for h in range(self.horizon)] for g, group in enumerate(GROUPS)
        }
        median = outcomes["median"]
        if all(r == "fallback" for r in median):
            self.reason = (
                f"fallback: {self.known} observation(s), too few scored forecasts to compare models yet"
                if any(self.selected["median"])
                else "no observations yet"
            )
            return
        self.reason = (
            f"per horizon step, p50 by p50 pinball loss and p90/p99 by p90 pinball loss over the last {self.window} scored "
            f"targets: hedge (the error-weighted mix) unless another model won {self.patience} times in a row by "
            f"{self.margin:.0%}, back to hedge once it is no worse"
        )
        if "fallback" in median:
            self.reason += f"; steps {', '.join(str(h + 1) for h, r in enumerate(median) if r == 'fallback')} still on a fallback"

    def _select_one(self, group: str, h: int, losses: np.ndarray, eligible: np.ndarray) -> str:
        """Choose group's model at horizon step h from each candidate's mean loss (eligible: enough scored targets
        and a calibrated forecast now); returns what happened."""
        selected, streaks = self.selected[group], self._streak[group]
        current = selected[h]
        ranked = np.flatnonzero(eligible)
        if not len(ranked):  # too few scored targets: the most robust candidate that has a forecast
            usable = [c for c in self.candidates if not math.isnan(c.issued.last_points[h])]
            usable.sort(key=lambda c: FALLBACK_ORDER.index(c.name) if c.name in FALLBACK_ORDER else len(FALLBACK_ORDER))
            selected[h] = usable[0] if usable else None
            return "fallback"
        first = ranked[np.argmin(losses[ranked])]  # the lowest loss; ties go to the earlier candidate
        best_loss, best = float(losses[first]), self.candidates[first]
        at = next((i for i in ranked if self.candidates[i] is current), None)
        current_loss = float(losses[at]) if at is not None else None
        hedge = (float(losses[-1]), self.candidates[-1]) if eligible[-1] else None  # Hedge is the last candidate
        if hedge is not None and (current is None or current_loss is None or (current is not hedge[1] and hedge[0] <= current_loss)):
            # Hedge is the incumbent by default: another model takes a step only by winning consistently, and
            # gives it back as soon as Hedge is no worse (near-ties then cost nothing, where switching did).
            selected[h], streaks[h] = hedge[1], ("", 0)
            return "best"
        if current is None or current_loss is None or best is current:
            selected[h], streaks[h] = best, ("", 0)
            return "best"
        if best_loss < (1 - self.margin) * current_loss:
            name, count = streaks[h]
            count = count + 1 if name == best.name else 1
            streaks[h] = (best.name, count)
            if count >= self.patience:
                selected[h], streaks[h] = best, ("", 0)
                return "switched"
            return "kept"
        streaks[h] = ("", 0)
        return "kept"

    def forecast(self) -> ForecastResult:
        if not any(self.selected["median"]):
            return ForecastResult(self.step, "none", self.reason, np.full(self.horizon, math.nan), {}, (), np.zeros(self.horizon, dtype=bool), self.reason)
        points = np.full(self.horizon, math.nan)
        bounds = np.full((self.horizon, len(self.quantiles)), np.nan)
        upper = [i for i, q in enumerate(self.quantiles) if q > 0.5]
        methods, upper_methods = [], []
        for h in range(self.horizon):
            centre, tail = self.selected["median"][h], self.selected["upper"][h] or self.selected["median"][h]
            if centre is None or not centre.issued.issues:
                methods.append("none")
                continue
            points[h], bounds[h] = centre.issued.last_points[h], centre.issued.last_bounds[h]
            methods.append(centre.name)
            if tail is not None and not np.isnan(tail.issued.last_bounds[h]).any():
                bounds[h, upper] = tail.issued.last_bounds[h, upper]
                upper_methods.append(tail.name)
        reason = self.reason
        missing = np.isnan(bounds).any(axis=1) & ~np.isnan(points)
        if missing.any():  # not calibrated yet: the point forecast for every level, said so
            bounds[missing] = points[missing, None]
            reason += "; some quantiles uncalibrated (fewer than 30 errors yet): the point forecast is given"
        bounds = np.maximum.accumulate(bounds, axis=1)  # quantiles from two models must not cross
        if upper_methods and upper_methods != methods:
            reason += f"; p90/p99 from {describe(upper_methods)}"
        quantiles = {q: bounds[:, i].copy() for i, q in enumerate(self.quantiles)}
        calibrated = ~np.isnan(points) & ~missing
        return ForecastResult(self.step, describe(methods), reason, points, quantiles, tuple(methods), calibrated, self._distrust(calibrated))

    def _distrust(self, calibrated: np.ndarray) -> str:
        """Why the forecast must not be acted on yet ("" when it may be)."""
        if self.known < self.trust_after:
            return f"{self.known} observation(s), fewer than {self.trust_after}"
        if not calibrated.all():
            missing = int((~calibrated).sum())
            return f"quantiles not calibrated yet at {missing} of {self.horizon} horizon steps (fewer than {self.candidates[0].conformal.minimum} scored errors)"
        # Low recent coverage is no reason to distrust: it means demand is outrunning the forecast (a ramp), and
        # dropping the forecast then leaves the load alone to size, later still (a ramp fell from 99.3 % to 89.7 %
        # attainment in the simulator when coverage under 70 % did).
        return ""


class RollingMean:
    """Mean of the last `window` values in O(1)."""

    def __init__(self, window: int) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0

    def add(self, value: float) -> None:
        if len(self.values) == self.values.maxlen:
            self.total -= self.values[0]
        self.values.append(value)
        self.total += value

    def __len__(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return self.total / len(self.values) if self.values else math.nan



class Quality:
    """How the published forecasts did: relative MAE of p50 and coverage of p90/p99, over recent targets."""

    def __init__(self, window: int) -> None:
        self.errors = RollingMean(window)
        self.levels = RollingMean(window)
        self.hits = {0.9: RollingMean(window), 0.99: RollingMean(window)}

    def score(self, published: Sequence[ForecastResult], step: int, y: float, typical: float) -> None:
        for result in published:
            h = step - result.step
            if not 1 <= h <= len(result.points) or not result.quantiles:
                continue
            median = result.quantiles.get(0.5)
            if median is None or math.isnan(median[h - 1]):
                continue
            self.errors.add(abs(y - float(median[h - 1])))
            self.levels.add(y)
            if not result.calibrated[h - 1]:
                continue  # its quantiles were the point forecast: coverage measures calibrated quantiles only
            for q, hits in self.hits.items():
                if q in result.quantiles and not math.isnan(result.quantiles[q][h - 1]):
                    hits.add(1.0 if y <= result.quantiles[q][h - 1] else 0.0)

    @property
    def scored(self) -> int:
        return len(self.errors)

    @property
    def relative_mae(self) -> float:
        mean = self.levels.mean
        return self.errors.mean / mean if mean and not math.isnan(mean) and mean > 0 else math.nan

    def coverage(self, quantile: float) -> float:
        return self.hits[quantile].mean
