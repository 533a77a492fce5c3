"""Crash-loop back-off per model, as a pure function of failures, readiness and the clock.

Kubernetes' CrashLoopBackOff is the model: the first failure is replaced at
once (a killed replica costs one cold start, nothing more), every further one
waits twice as long as the last, from `initial_s` up to `max_s`, and a model
whose replica then stays ready for `reset_after_s` starts over from zero.

Two rules keep the count honest for a model with several replicas:

- A failure counts only when the replica started after the last counted one.
  Three replicas of a broken config that die in the same wave are one failed
  attempt, not three (else a fleet of N would back off N doublings at once).
- While the model is backing off, one replica at a time probes; the others
  start once a probe has become ready. A broken model then costs one process
  per attempt, not one per desired replica.

Times are monotonic seconds; the shell passes `now_s` (tests move a fake clock).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BackoffSettings:
    initial_s: float = 10.0
    """Wait before the second restart; each further one waits twice as long, seconds (> 0)."""
    max_s: float = 300.0
    """Longest wait between restarts, seconds (>= initial_s)."""
    reset_after_s: float = 600.0
    """A replica ready this long clears the model's failures, seconds (> 0)."""


@dataclass(frozen=True)
class CrashState:
    """One model's failures since its back-off last reset."""

    restarts: int = 0
    """Counted failures (a wave of replicas dying together counts once)."""
    last_failure_s: float | None = None
    """When the last counted failure happened."""
    retry_at_s: float = 0.0
    """No replica of the model starts before this."""
    proven: bool = False
    """A replica became ready since the last counted failure: the rest may start without probing."""
    reason: str = ""
    """How the last failed replica ended (exit code, timeout)."""
    log_tail: tuple[str, ...] = ()
    """The last lines of that replica's log."""

    @property
    def backing_off(self) -> bool:
        """Whether more than the first failure happened: starts are spaced and probed."""
        return self.restarts >= 2


def delay_s(restarts: int, settings: BackoffSettings) -> float:
    """The wait after the `restarts`-th counted failure: 0 after the first, then initial_s doubling to max_s."""
    if restarts <= 1:
        return 0.0
    # min() before the power would overflow for a long loop; the exponent is bounded by the cap anyway.
    exponent = min(restarts - 2, 64)
    return min(settings.initial_s * 2.0**exponent, settings.max_s)


def record_failure(
    state: CrashState, now_s: float, started_s: float, ready_for_s: float, reason: str, log_tail: tuple[str, ...], settings: BackoffSettings
) -> CrashState:
    """A replica that started at `started_s` died or never became ready (it was ready for `ready_for_s`, 0 if never)."""
    if ready_for_s >= settings.reset_after_s:
        # It served long enough: this is a fresh failure, not part of a loop.
        state = CrashState()
    if state.last_failure_s is not None and started_s < state.last_failure_s:
        # Started before the last counted failure: the same attempt, only the reason is newer.
        return replace(state, reason=reason, log_tail=log_tail)
    restarts = state.restarts + 1
    return CrashState(
        restarts=restarts,
        last_failure_s=now_s,
        retry_at_s=now_s + delay_s(restarts, settings),
        proven=False,
        reason=reason,
        log_tail=log_tail,
    )


def record_ready(state: CrashState) -> CrashState:
    """A replica of the model became ready: the others need not probe one at a time any more."""
    return state if state.proven or state.restarts == 0 else replace(state, proven=True)


def settle(state: CrashState, longest_ready_s: float, settings: BackoffSettings) -> CrashState:
    """Clear the failures once some replica of the model has been ready for reset_after_s."""
    if state.restarts and longest_ready_s >= settings.reset_after_s:
        return CrashState()
    return state


def allowed_starts(state: CrashState, now_s: float, wanted: int, starting: int) -> int:
    """How many of `wanted` missing replicas may start now, with `starting` of the model already starting."""
    if wanted <= 0:
        return 0
    if not state.backing_off or state.proven:
        return wanted
    if now_s < state.retry_at_s:
        return 0
    return max(0, min(wanted, 1 - starting))


def describe(state: CrashState, now_s: float) -> str:
    """One line for status and logs ("" when the model has no failures)."""
    if state.restarts == 0:
        return ""
    if not state.backing_off:
        return f"replaced a failed replica ({state.reason})" if state.reason else "replaced a failed replica"
    wait_s = state.retry_at_s - now_s
    if state.proven:
        head = "recovering from a crash-loop (a replica is ready)"
    elif wait_s > 0:
        head = f"crash-loop, next try in {wait_s:.0f} s"
    else:
        head = "crash-loop, retrying"
    return f"{head}, {state.restarts} restarts: {state.reason}" if state.reason else f"{head}, {state.restarts} restarts"
