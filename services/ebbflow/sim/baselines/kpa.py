"""Knative Pod Autoscaler (KPA) on concurrency.

Sources (knative.dev/docs/serving/autoscaling/ and serving's config-autoscaler.yaml defaults):
- stable-window 60 s; panic-window-percentage 10 (a 6 s panic window);
- panic-threshold-percentage 200: panic when the panic window's desired pods >= 2x the ready pods;
  in panic the autoscaler never scales down, and panic ends after a stable window without the condition;
- container-concurrency-target-percentage 70: the per-pod target is 70 % of the configured concurrency;
- tick-interval 2 s; max-scale-up-rate 1000 (x ready pods), max-scale-down-rate 2 (at most halve);
- scale-to-zero-grace-period 30 s: with min-scale 0, the last pod goes once the stable window has wanted
  zero pods for that long (the comparison passes the fleet's minimum as min-scale).
`concurrency` (the per-pod target before the 70 %) is the swept knob.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ebbflow.sim.control import Observation

STABLE_WINDOW_S = 60.0
PANIC_WINDOW_S = 6.0
PANIC_THRESHOLD = 2.0
TARGET_PERCENTAGE = 0.70
TICK_S = 2.0
SCALE_TO_ZERO_GRACE_S = 30.0
MAX_SCALE_UP_RATE = 1000.0
MAX_SCALE_DOWN_RATE = 2.0


@dataclass
class Kpa:
    concurrency: float
    name: str = "kpa"
    period_s: float = TICK_S
    panic_since_s: float = -1.0
    last_panic_s: float = -math.inf
    max_panic_pods: int = 0
    min_scale: int = 1
    zero_since_s: float = -1.0

    def decide(self, obs: Observation) -> int:
        target = self.concurrency * TARGET_PERCENTAGE
        ready = max(1, obs.ready)
        stable = math.ceil(obs.in_flight(STABLE_WINDOW_S) / target)
        panic = math.ceil(obs.in_flight(PANIC_WINDOW_S) / target)
        if panic / ready >= PANIC_THRESHOLD:
            if self.panic_since_s < 0:
                self.panic_since_s = obs.now_s
            self.last_panic_s = obs.now_s
        elif self.panic_since_s >= 0 and obs.now_s - self.last_panic_s >= STABLE_WINDOW_S:
            self.panic_since_s, self.max_panic_pods = -1.0, 0
        if self.panic_since_s >= 0:
            # In panic: follow the panic window, never below what panic already asked for.
            self.max_panic_pods = max(self.max_panic_pods, panic, obs.current)
            desired = self.max_panic_pods
        else:
            desired = stable
        desired = min(desired, math.ceil(MAX_SCALE_UP_RATE * ready))
        desired = max(desired, math.floor(ready / MAX_SCALE_DOWN_RATE))
        if self.min_scale > 0 or desired > 0:
            self.zero_since_s = -1.0
            return max(1, self.min_scale, desired)
        if self.zero_since_s < 0:
            self.zero_since_s = obs.now_s
        return 0 if obs.now_s - self.zero_since_s >= SCALE_TO_ZERO_GRACE_S else 1

    @property
    def panicking(self) -> bool:
        return self.panic_since_s >= 0
