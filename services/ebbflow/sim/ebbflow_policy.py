"""ebbflow's own policy in the simulator: the scheduler's pure core, fed as the services feed it.

Demand is exogenous (what arrives does not depend on the replicas), so the
forecast of a trace is computed once (`forecasts`), by the forecaster's own
Selector over the arrival-rate series at one resolution, and shared by every
parameter setting; each decision sees only the forecast issued at the last
complete bin. Load is read over a 30-s window, panic over a 6-s one. The
capacity curves are measured with the token counts the fleet has served
(the development split's requests), at the SLO of the comparison; their
calibration is tuned on the development split, and can also be corrected
online from the SLO misses the router sees (`learn`, off by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ebbflow.forecaster.conformal import QUANTILES
from ebbflow.forecaster.selection import Selector
from ebbflow.policy import ModelPolicy
from ebbflow.runtime.config import SchedulerConfig
from ebbflow.scheduler.capacity import CapacityModel, recalibrate
from ebbflow.scheduler.core import DecisionInputs, ForecastView, LoadView, ScalingState, decide, resume_state
from ebbflow.sim.control import Observation



@dataclass(frozen=True)
class Forecasts:
    """Forecasts issued at the end of each bin: views[k] was issued at (k + 1) * step_s."""

    step_s: float
    views: tuple[ForecastView | None, ...]
    observed_before: int = 0
    """Bins the forecaster had seen before this clock's zero."""

    def shifted(self, bins: int) -> "Forecasts":
        """The same forecasts on a clock that starts `bins` bins later (an evaluation split)."""
        views = tuple(
            None if v is None else ForecastView(v.issued_s - bins * self.step_s, v.step_s, v.quantiles, v.method) for v in self.views[bins:]
        )
        return Forecasts(self.step_s, views, self.observed_before + bins)

    def at(self, now_s: float, min_observations: int) -> ForecastView | None:
        k = int(now_s // self.step_s) - 1
        if k + self.observed_before < min_observations - 1 or not 0 <= k < len(self.views):
            return None
        return self.views[k]


def forecasts(rates: np.ndarray, step_s: float, horizon: int = 12, season: int = 0) -> Forecasts:
    """Run the forecaster's Selector over a req/s series (NaN = missing), one update per bin."""
    selector = Selector(horizon, season=season, quantiles=QUANTILES, max_history=2000, rate_floor=1.0 / step_s)
    views: list[ForecastView | None] = []
    for k, value in enumerate(rates):
        result = selector.observe(float(value))
        issued = (k + 1) * step_s
        if result.quantiles and not result.untrusted_reason:  # the live scheduler acts only on a trusted forecast
            views.append(ForecastView(issued, step_s, {q: tuple(float(v) for v in result.quantiles[q]) for q in QUANTILES}, result.method))
        else:
            views.append(None)
    return Forecasts(step_s, tuple(views))


@dataclass
class Ebbflow:
    """Controller running scheduler.core.decide with a capacity model and precomputed forecasts."""

    policy: ModelPolicy
    capacity: CapacityModel
    forecast: Forecasts | None
    cold_start_s: float
    name: str = "ebbflow"
    period_s: float = 1.0
    window_s: float = 30.0
    """Load window of the reactive floor (15 s reacted to noise, 60 s too late to a surge, on the Azure traces)."""
    burst_window_s: float = 6.0
    min_forecast_observations: int = SchedulerConfig.min_forecast_observations
    learn: bool = False
    """Correct the capacity curves online from the SLO misses the router observes (capacity.recalibrate).
    Off by default: on the Azure traces it wandered past the miss budget (see the simulator's README section)."""
    learn_every_s: float = 60.0
    learn_window_s: float = 300.0
    state: ScalingState = field(default_factory=ScalingState)
    current: int = -1
    learned_at_s: float = 0.0
    calibrations: list = field(default_factory=list)

    def decide(self, obs: Observation) -> int:
        if self.current < 0:
            self.current, self.state = obs.current, resume_state(obs.current, obs.now_s)
            self.learned_at_s = obs.now_s
        if self.learn and obs.now_s - self.learned_at_s >= self.learn_every_s:
            self.learned_at_s = obs.now_s
            finished, missed = obs.slo_misses(self.learn_window_s)
            calibration = recalibrate(self.capacity.calibration, finished, missed, self.capacity.slo.target)
            if calibration != self.capacity.calibration:
                self.capacity = replace(self.capacity, calibration=calibration)
            self.calibrations.append((obs.now_s, calibration))
        view = self.forecast.at(obs.now_s, self.min_forecast_observations) if self.forecast else None
        load = LoadView(
            True, obs.in_flight(self.window_s), obs.arrival_rps(self.window_s), forecast=view, burst_in_flight=obs.in_flight(self.burst_window_s), idle_s=obs.idle_s()
        )
        lead = self.policy.lead_s or self.cold_start_s + self.period_s
        decision, self.state = decide(DecisionInputs(load, self.policy, self.state, obs.current, obs.now_s, lead_s=lead, capacity=self.capacity))
        self.current = decision.replicas
        return decision.replicas


def default_policy(model: str = "sim", **overrides) -> ModelPolicy:
    """ebbflow's defaults for the simulated model: prediction at p90, 30 s scale-down delay, panic on."""
    return replace(ModelPolicy(model=model, min_replicas=1, max_replicas=200), **overrides).validate()

