"""Ray Serve's default autoscaling policy (replica_queue_length_autoscaling_policy).

Sources (docs.ray.io, ray.serve.config.AutoscalingConfig and the Advanced Autoscaling guide):
- target_ongoing_requests 2 (default since Ray 2.32); desired = ceil(running x (ongoing per replica /
  target)) with smoothing_factor 1;
- ongoing requests averaged over look_back_period_s 30 s (reported every metrics_interval_s 10 s);
- upscale_delay_s 30, downscale_delay_s 600: a decision is taken only after the desired count has been
  above (below) the current one for that long; the counter resets when the direction changes;
- the controller loops every 0.1 s (CONTROL_LOOP_INTERVAL_S); the simulation evaluates it every 1 s,
  with the same delays in seconds;
- with no running replica and requests waiting, it scales to one at once;
- min_replicas 0 lets it reach zero, after the downscale delay like any other step down
  (downscale_to_zero_delay_s defaults to downscale_delay_s).
`target` (target_ongoing_requests) is the swept knob.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ebbflow.sim.control import Observation

LOOK_BACK_S = 30.0
UPSCALE_DELAY_S = 30.0
DOWNSCALE_DELAY_S = 600.0
DEFAULT_TARGET = 2.0


@dataclass
class RayServe:
    target: float = DEFAULT_TARGET
    name: str = "ray"
    period_s: float = 1.0
    direction: int = 0
    """+1 while desired has stayed above current, -1 below (Ray's decision counter, kept as a start time)."""
    since_s: float = 0.0
    min_replicas: int = 1

    def decide(self, obs: Observation) -> int:
        current = obs.current
        running = obs.ready
        ongoing = obs.in_flight(LOOK_BACK_S)
        if running == 0:
            return max(current, 1) if ongoing > 0 else current
        desired = max(self.min_replicas, math.ceil(running * (ongoing / running / self.target)))
        direction = (desired > current) - (desired < current)
        if direction != self.direction:
            self.direction, self.since_s = direction, obs.now_s
        if direction == 0:
            return current
        delay = UPSCALE_DELAY_S if direction > 0 else DOWNSCALE_DELAY_S
        if obs.now_s - self.since_s >= delay:
            self.direction = 0  # the counter resets after a decision
            return desired
        return current
