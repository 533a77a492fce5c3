"""Each model's crash-loop back-off as the local actuator keeps it: failures counted, starts held, status told.

The arithmetic (how long to wait, when a loop is over) is actuator.backoff's,
pure; this keeps one `CrashState` per model, the log of its last failed
replica, and the `ebbflow_actuator_crash_restarts` gauge in step.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

from ebbflow.actuator.backoff import BackoffSettings, CrashState, allowed_starts, describe, record_failure, record_ready, settle
from ebbflow.actuator.core import Phase
from ebbflow.actuator.replica import ActuatorMetrics, ManagedReplica
from ebbflow.v1 import status_pb2

log = logging.getLogger(__name__)


class CrashLoops:
    def __init__(self, settings: BackoffSettings, metrics: ActuatorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.states: dict[str, CrashState] = {}
        """Each model's failures since its back-off last reset (absent: none)."""
        self._logs: dict[str, Path] = {}
        """The log of each model's last failed replica."""
        self._held_logged: dict[str, int] = {}

    def ready(self, model: str) -> None:
        """A replica of `model` became ready."""
        self.states[model] = record_ready(self.states.get(model, CrashState()))

    def failed(self, replica: ManagedReplica, now_s: float, reason: str, tail: tuple[str, ...], log_path: Path) -> CrashState:
        """A replica died or never became ready without being asked to stop: count it toward its model's back-off."""
        model = replica.entry.model
        ready_for_s = now_s - replica.ready_s if replica.ready_s is not None else 0.0
        state = record_failure(self.states.get(model, CrashState()), now_s, replica.started_s, ready_for_s, reason, tail, self.settings)
        self.states[model] = state
        self._logs[model] = log_path
        self.metrics.failures.labels(model).inc()
        self.metrics.restarts.labels(model).set(state.restarts)
        return state

    def allowed_starts(self, model: str, mine: list[ManagedReplica], wanted: int) -> int:
        """How many of `wanted` new replicas the model's crash-loop back-off lets start now."""
        state = self.states.get(model)
        if state is None:
            return wanted
        now = time.monotonic()
        ready = [now - r.ready_s for r in mine if r.ready_s is not None and r.phase == Phase.READY and not r.stopping]
        state = settle(state, max(ready, default=0.0), self.settings)
        if state.restarts == 0:
            self.states.pop(model, None)
            self.metrics.restarts.labels(model).set(0)
            return wanted
        self.states[model] = state
        starting = sum(1 for r in mine if r.phase == Phase.STARTING and not r.stopping)
        allowed = allowed_starts(state, now, wanted, starting)
        if allowed < wanted and self._held_logged.get(model) != state.restarts:
            self._held_logged[model] = state.restarts  # once per failure, not once per tick
            log.info("%s: %d of %d replica start(s) held: %s", model, wanted - allowed, wanted, describe(state, now))
        return allowed

    def settle_idle(self, model: str, target: int, mine: list[ManagedReplica]) -> None:
        """A model scaled to zero with nothing left running has no crash-loop to report any more."""
        if target == 0 and not mine and self.states.pop(model, None) is not None:
            self.metrics.restarts.labels(model).set(0)

    def report(self, replicas: Iterable[ManagedReplica]) -> dict[str, status_pb2.CrashLoop]:
        """Each model's failures for `ebbflow status`, with the wait turned into wall-clock time."""
        now, wall = time.monotonic(), time.time()
        replicas = list(replicas)
        result: dict[str, status_pb2.CrashLoop] = {}
        for model, state in self.states.items():
            ready = [now - r.ready_s for r in replicas if r.entry.model == model and r.ready_s is not None and r.phase == Phase.READY]
            state = settle(state, max(ready, default=0.0), self.settings)
            if state.restarts == 0:
                continue
            waiting = state.backing_off and not state.proven and state.retry_at_s > now
            result[model] = status_pb2.CrashLoop(
                restarts=state.restarts,
                state=describe(state, now),
                next_try_unix_s=wall + (state.retry_at_s - now) if waiting else 0.0,
                reason=state.reason,
                log_tail=state.log_tail,
                log_path=str(self._logs.get(model, "")),
                last_failure_unix_s=wall - (now - state.last_failure_s) if state.last_failure_s is not None else 0.0,
            )
        return result
