"""An NVIDIA-Dynamo-planner-like policy: predictive every 180 s from ARIMA, plus +/-1 reactive every 5 s.

Sources (docs.nvidia.com/dynamo, Planner Design, "Throughput-Based Scaling"):
- every adjustment_interval (180 s) the planner predicts the next interval's request count with its load
  predictor (ARIMA by default; constant and Prophet also exist);
- replicas = ceil(predicted request rate / the throughput one GPU engine sustains at the SLA), where that
  throughput comes from pre-deployment profiling; here the profiling is the shared capacity model at the
  swept SLA (`ttft_s`), so "Dynamo SLA" is the swept knob;
- the load-based (reactive) mode adjusts by one replica at a time on a short interval (5 s) from
  current engine load.
The ARIMA is the forecaster's (orders and parameters fitted by statsmodels) on 180-s bins, updated with
every interval and refitted every REFIT_EVERY intervals (Dynamo refits each interval; on a 14-day trace that
is 6,720 fits, so the parameters are refreshed every 6 h instead). It needs 30 bins (90 min) before it fits;
until then it predicts the last interval's rate, as a constant predictor would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ebbflow.forecaster.models.arima import Arima
from ebbflow.scheduler.capacity import CapacityModel
from ebbflow.sim.control import Observation

ADJUSTMENT_INTERVAL_S = 180.0
REACTIVE_INTERVAL_S = 5.0


REFIT_EVERY = 120


def arima_predictions(rates: np.ndarray, refit_every: int = REFIT_EVERY) -> np.ndarray:
    """One-step-ahead ARIMA forecast after each 180-s bin (NaN-free, >= 0); the last value while ARIMA cannot fit."""
    rates = np.asarray(rates, dtype=float)
    out = np.zeros(len(rates))
    model = Arima()
    last = 0.0
    for k, value in enumerate(rates):
        if not model.fitted or k % refit_every == 0:
            model = Arima()
            model.fit(rates[: k + 1])  # fit() replays the recent history, so the state is current
        else:
            model.update(float(value))
        if not math.isnan(value):
            last = float(value)
        predicted = float(model.predict(1)[0]) if model.fitted else math.nan
        out[k] = max(0.0, predicted if not math.isnan(predicted) else last)
    return out


@dataclass
class DynamoLike:
    capacity: CapacityModel
    predictions: np.ndarray
    """predictions[k]: the req/s forecast for interval k + 1, issued at the end of interval k."""
    name: str = "dynamo"
    period_s: float = REACTIVE_INTERVAL_S
    planned: int = -1
    last_plan_s: float = -math.inf

    def decide(self, obs: Observation) -> int:
        if obs.now_s - self.last_plan_s >= ADJUSTMENT_INTERVAL_S or self.planned < 0:
            self.last_plan_s = obs.now_s
            k = int(obs.now_s // ADJUSTMENT_INTERVAL_S) - 1
            rate = self.predictions[k] if 0 <= k < len(self.predictions) else obs.arrival_rps(ADJUSTMENT_INTERVAL_S)
            self.planned = max(1, self.capacity.replicas_for(rate))
            return self.planned
        need = self.capacity.replicas_for(obs.arrival_rps(REACTIVE_INTERVAL_S))
        current = obs.current
        if need > current:
            return current + 1
        if need < current - 1:
            return max(1, current - 1)
        return current
