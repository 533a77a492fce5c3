"""Kubernetes HorizontalPodAutoscaler on a per-pod custom metric (in-flight requests per ready pod).

Sources (kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/):
- "desiredReplicas = ceil[currentReplicas * (currentMetricValue / desiredMetricValue)]" (Algorithm details);
- tolerance 0.1: no change while the ratio is within 10 % of 1.0 (--horizontal-pod-autoscaler-tolerance);
- the controller runs every 15 s (--horizontal-pod-autoscaler-sync-period);
- default behavior: scale-down stabilization window 300 s, at most 100 % of pods removed per 15 s;
  scale-up stabilization 0 s, at most max(4 pods, 100 %) added per 15 s (selectPolicy: Max);
- the per-pod average is over ready pods; HPA cannot act with no ready pod and never scales to zero.
The metric is the in-flight count averaged over the sync period, as a Prometheus-adapter rate window of
that length would give; `target` (in-flight per pod) is the swept knob.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from ebbflow.sim.control import Observation

SYNC_PERIOD_S = 15.0
TOLERANCE = 0.1
SCALE_DOWN_STABILIZATION_S = 300.0
SCALE_UP_PODS = 4
SCALE_UP_PERCENT = 100.0


@dataclass
class Hpa:
    target: float
    name: str = "hpa"
    period_s: float = SYNC_PERIOD_S
    recommendations: deque = field(default_factory=deque)

    def decide(self, obs: Observation) -> int:
        current = obs.current
        if obs.ready == 0:
            return max(current, 1)
        ratio = obs.in_flight(SYNC_PERIOD_S) / obs.ready / self.target
        desired = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(current * ratio)
        return self.behave(desired, current, obs.now_s)

    def behave(self, desired: int, current: int, now_s: float) -> int:
        """Default behavior: stabilise scale-down over 300 s, rate-limit scale-up."""
        self.recommendations.append((now_s, desired))
        while self.recommendations and self.recommendations[0][0] <= now_s - SCALE_DOWN_STABILIZATION_S:
            self.recommendations.popleft()
        if desired < current:
            desired = min(current, max(r for _, r in self.recommendations))
        elif desired > current:
            desired = min(desired, current + max(SCALE_UP_PODS, math.ceil(current * SCALE_UP_PERCENT / 100)))
        return max(1, desired)
