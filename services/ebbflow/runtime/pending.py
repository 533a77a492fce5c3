"""Writes that must land, as a pure book: the newest state of each key not yet known to be stored, and when to try it.

A KV key holds a state, so only its newest value matters: a value recorded
while an older one still waits replaces it, and an attempt that fails or
lands late for a value that has since been replaced changes nothing (a stale
state is never written again over a newer one). Events (JetStream messages)
are different: each one counts, so they wait in order, each under its own
message id, so one stored before its acknowledgement was lost is not stored
twice when it is tried again.

Failed attempts back off per key, from `initial_s` doubling to `max_s`; a
reconnect makes everything due at once. Times are monotonic seconds passed in
by the shell (runtime.landing), so tests move a fake clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RetrySettings:
    initial_s: float = 0.2
    """Wait after a key's first failed attempt, seconds (> 0); each further failure doubles it."""
    max_s: float = 5.0
    """Longest wait between attempts of one key, seconds (>= initial_s)."""
    max_events: int = 10_000
    """Events kept while NATS is away; beyond this the oldest are dropped (and counted)."""


@dataclass(frozen=True)
class Write:
    """One key's state to store: `value`, or a delete when None; `version` orders the states of all keys."""

    key: str
    value: bytes | None
    version: int


@dataclass(frozen=True)
class Event:
    """A message to publish once: JetStream drops a second copy with the same `message_id` within its duplicate window."""

    subject: str
    data: bytes
    message_id: str


def retry_delay_s(failures: int, settings: RetrySettings) -> float:
    """The wait after the `failures`-th failed attempt in a row (>= 1)."""
    return min(settings.max_s, settings.initial_s * 2 ** max(0, failures - 1))


class PendingWrites:
    """The newest unstored state per key, each with its next attempt time and failures in a row."""

    def __init__(self, settings: RetrySettings = RetrySettings()) -> None:
        self.settings = settings
        self._writes: dict[str, Write] = {}
        self._due_s: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._version = 0

    def record(self, key: str, value: bytes | None, now_s: float) -> Write:
        """The key's new state, due now; it replaces whatever older state of the key still waits."""
        self._version += 1
        write = Write(key, value, self._version)
        self._writes[key] = write
        self._due_s[key] = now_s
        return write

    def due(self, now_s: float) -> list[Write]:
        """The writes to attempt now, in the order they were recorded."""
        return sorted((w for k, w in self._writes.items() if self._due_s[k] <= now_s), key=lambda w: w.version)

    def landed(self, write: Write) -> bool:
        """`write` is stored. True when it was the key's newest state (the key is done); False when a newer one waits."""
        if self._writes.get(write.key) != write:
            return False
        del self._writes[write.key], self._due_s[write.key]
        self._failures.pop(write.key, None)
        return True

    def failed(self, write: Write, now_s: float) -> int:
        """An attempt of `write` failed: its key backs off. The key's failures in a row (0: a newer state replaced it, due now)."""
        if self._writes.get(write.key) != write:
            return 0
        failures = self._failures.get(write.key, 0) + 1
        self._failures[write.key] = failures
        self._due_s[write.key] = now_s + retry_delay_s(failures, self.settings)
        return failures

    def all_due(self, now_s: float) -> None:
        """Make every waiting write due now (NATS is back: no reason to wait out a back-off)."""
        for key in self._due_s:
            self._due_s[key] = now_s

    def wait_s(self, now_s: float) -> float | None:
        """Seconds until the next write is due (0: one is due now), None when nothing waits."""
        if not self._due_s:
            return None
        return max(0.0, min(self._due_s.values()) - now_s)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def __len__(self) -> int:
        return len(self._writes)

    def __contains__(self, key: str) -> bool:
        return key in self._writes


class PendingEvents:
    """Events not yet stored, oldest first, at most `max_events` of them."""

    def __init__(self, settings: RetrySettings = RetrySettings()) -> None:
        self.settings = settings
        self._events: deque[Event] = deque()
        self.dropped = 0
        """Events dropped because more than max_events waited."""
        self._due_s = 0.0
        self._failures = 0

    def add(self, event: Event) -> None:
        if len(self._events) >= self.settings.max_events:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)

    def head(self, now_s: float) -> Event | None:
        """The oldest event, when it may be attempted now."""
        if not self._events or now_s < self._due_s:
            return None
        return self._events[0]

    def landed(self, event: Event) -> None:
        if self._events and self._events[0] == event:
            self._events.popleft()
        self._failures, self._due_s = 0, 0.0

    def failed(self, now_s: float) -> int:
        """The oldest event could not be stored: all of them wait (they go in order). Failures in a row."""
        self._failures += 1
        self._due_s = now_s + retry_delay_s(self._failures, self.settings)
        return self._failures

    def all_due(self) -> None:
        self._due_s = 0.0

    def wait_s(self, now_s: float) -> float | None:
        if not self._events:
            return None
        return max(0.0, self._due_s - now_s)

    def __len__(self) -> int:
        return len(self._events)
