"""Requests held while their model has no ready replica (scale from zero, a cold start, every replica failing).

A held request waits in its model's bounded `HoldQueue` (router.core) until
the follower sees a ready replica, the hold limit (`hold_timeout_s`) passes
or the client's deadline does. While any request of a model is held, the
router publishes a wake-up every second, so a model scaled to zero starts a
replica without waiting for the next load snapshot.

A stopping router sets a time by which it holds nothing (`answer_by`): a held
request still without a replica then is answered UNAVAILABLE, which clients
may retry (the request was never sent), instead of being cut off when the
server's grace ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import grpc

from ebbflow.router.core import HoldQueue, QueueFull
from ebbflow.router.refusal import Refusal
from ebbflow.router.telemetry import RouterMetrics
from ebbflow.router.upstreams import Upstream, Upstreams
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.registry import RegistryView
from ebbflow.runtime.wire import STARTING

log = logging.getLogger(__name__)


class Deadline(Protocol):
    """What a hold needs of the request's context: the client's time left (a gRPC context; None over HTTP)."""

    def time_remaining(self) -> float | None: ...


class NoDeadline:
    """The context of a request that carries no deadline of its own (HTTP): only the hold limit bounds it."""

    def time_remaining(self) -> float | None:
        return None


@dataclass
class HeldModel:
    """Requests of one model waiting for a ready replica, in arrival order."""

    queue: HoldQueue
    waiters: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    waker: asyncio.Task[None] | None = None


class Holds:
    """Every model's held requests, released in arrival order when the model has a ready replica again."""

    def __init__(self, config: RouterConfig, bus: Bus, view: RegistryView, metrics: RouterMetrics, upstreams: Upstreams) -> None:
        self.config = config
        self.bus = bus
        self.view = view
        self.metrics = metrics
        self.upstreams = upstreams
        self._held: dict[str, HeldModel] = {}
        self._closing: asyncio.Future[None] | None = None  # done once this router holds nothing more
        self._closing_timer: asyncio.TimerHandle | None = None

    async def acquire(self, model: str, size: int, avoid: set[str], hold_until: float, context: Deadline) -> Upstream:
        """A ready replica not in `avoid`, holding the request (bounded) while there is none.

        A wake-up clears `avoid`: time has passed, and a replica that failed
        may be back (restarted in place under the same registry entry).
        """
        while True:
            upstream = self.upstreams.pick(model, avoid)
            if upstream is not None:
                return upstream
            await self._hold(model, size, hold_until, context)
            avoid.clear()

    def release(self, ready: Mapping[str, Sequence[Upstream]]) -> None:
        """Wake the held requests of every model that now has a ready replica, oldest first."""
        for model, held in self._held.items():
            if held.waiters and ready.get(model):
                for ticket in held.queue.in_order():
                    waiter = held.waiters.get(ticket)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)

    def answer_by(self, deadline_s: float) -> None:
        """The router is stopping: from `deadline_s` (time.monotonic) on, held requests, and any that would be
        held, are answered UNAVAILABLE; until then a replica that becomes ready still takes them."""
        if self._closing_timer is not None:
            self._closing_timer.cancel()
        self._closing_timer = asyncio.get_running_loop().call_later(max(0.0, deadline_s - time.monotonic()), self._close_holds)

    def _closing_future(self) -> asyncio.Future[None]:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        return self._closing

    def _close_holds(self) -> None:
        closing = self._closing_future()
        if not closing.done():
            closing.set_result(None)

    def _shutting_down(self, model: str) -> Refusal:
        self.metrics.rejections.labels(model, "shutting_down").inc()
        return Refusal(
            grpc.StatusCode.UNAVAILABLE,
            f"the router is shutting down and model '{model}' has no ready replica yet; the request was not sent: retry it",
        )

    async def _hold(self, model: str, size: int, hold_until: float, context: Deadline) -> None:
        closing = self._closing_future()
        if closing.done():
            raise self._shutting_down(model)
        held = self._held.get(model)
        if held is None:
            held = self._held[model] = HeldModel(HoldQueue(self.config.hold_max_requests, self.config.hold_max_bytes))
        try:
            ticket = held.queue.admit(size)
        except QueueFull as full:
            self.metrics.rejections.labels(model, "queue_full").inc()
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"model '{model}' has no ready replica and its hold queue is full ({full}); retry with backoff",
            ) from None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        held.waiters[ticket] = waiter
        if held.waker is None or held.waker.done():
            held.waker = asyncio.create_task(self._wake_while_held(model, held), name=f"wake {model}")
        held_gauge = self.metrics.held.labels(model)
        held_gauge.inc()
        started = time.monotonic()
        remaining = context.time_remaining()
        client_until = started + remaining if remaining is not None else float("inf")
        try:
            timeout_s = max(0.0, min(hold_until, client_until) - started)
            await asyncio.wait((waiter, closing), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                if closing.done():
                    raise self._shutting_down(model)
                raise asyncio.TimeoutError
        except asyncio.TimeoutError:
            starting = sum(1 for r in self.view.of_model(model) if r.state == STARTING)
            if client_until <= hold_until:
                self.metrics.rejections.labels(model, "client_deadline").inc()
                message = f"the client deadline passed while waiting for a ready replica of model '{model}' ({starting} starting)"
            else:
                self.metrics.rejections.labels(model, "hold_timeout").inc()
                message = (
                    f"no ready replica of model '{model}' within the {self.config.hold_timeout_s:g} s hold limit "
                    f"({starting} starting); the request was not sent; check `ebbflow status`"
                )
            raise Refusal(grpc.StatusCode.DEADLINE_EXCEEDED, message) from None
        finally:
            held.queue.leave(ticket)
            held.waiters.pop(ticket, None)
            held_gauge.dec()
            self.metrics.hold_wait.labels(model).observe(time.monotonic() - started)

    async def _wake_while_held(self, model: str, held: HeldModel) -> None:
        """Publish a wake-up at once and every second while requests of `model` are held."""
        while held.waiters:
            try:
                await self.bus.nc.publish(subjects.wakeup_subject(model), model.encode())
            except Exception as error:  # NATS away: the next second tries again
                log.warning("publishing a wake-up for %s failed: %s", model, error)
            await asyncio.sleep(1.0)

    def close(self) -> None:
        if self._closing_timer is not None:
            self._closing_timer.cancel()
        for held in self._held.values():
            if held.waker is not None:
                held.waker.cancel()
