"""Forwarding one unary call to a replica, resent elsewhere when the replica did no work we could lose.

Only UNAVAILABLE is resent (the call never reached a model), at most
`max_retries` times, and only while the retry buffer (`retry_buffer_bytes`,
shared by every request of this router) has room to keep the request's bytes.
A replica that fails repeatedly is ejected for `eject_s`. When no replica is
left to try, the request is held (router.holding) like any other, and its
resends count afresh once a replica is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from opentelemetry import propagate

from ebbflow.router.core import RetryBudget
from ebbflow.router.holding import Holds
from ebbflow.router.refusal import Refusal
from ebbflow.router.telemetry import RouterMetrics
from ebbflow.router.upstreams import Upstreams
from ebbflow.runtime.config import RouterConfig

log = logging.getLogger(__name__)

# Upstream failures where the replica did no work we could lose: safe to resend elsewhere.
_RETRYABLE = grpc.StatusCode.UNAVAILABLE

_NOT_FORWARDED = (":", "grpc-", "user-agent")


def forwardable(context: grpc.aio.ServicerContext) -> list[tuple[str, str | bytes]] | None:
    """The client's own metadata (auth, trace context, custom headers); None when there is none (cheaper to send)."""
    metadata = [(k, v) for k, v in context.invocation_metadata() or () if not k.startswith(_NOT_FORWARDED)]
    return metadata or None


def with_trace_context(metadata: list[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """`metadata` with this process's current trace context in place of the client's."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v) for k, v in metadata or () if k not in carrier] + list(carrier.items())


class Forwarder:
    """Sends unary calls to the replicas of `upstreams`, resending and holding as above."""

    def __init__(self, config: RouterConfig, metrics: RouterMetrics, upstreams: Upstreams, holds: Holds) -> None:
        self.config = config
        self.metrics = metrics
        self.upstreams = upstreams
        self.holds = holds
        self._retry_budget = RetryBudget(config.retry_buffer_bytes)

    async def forward(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext, model: str, metadata: list[tuple[str, Any]] | None, span: Any = None
    ) -> bytes:
        """One unary call on a replica, resent elsewhere after a failure before any response (bounded)."""
        started = time.monotonic()
        hold_until = started + self.config.hold_timeout_s
        size = len(request)
        keep_for_retry = self.config.max_retries > 0 and self._retry_budget.take(size)
        ejector = self.upstreams.ejector
        avoid: set[str] = set()
        attempt = 0
        try:
            while True:
                upstream = self.upstreams.pick(model, avoid)
                if upstream is None:
                    upstream = await self.holds.acquire(model, size, avoid, hold_until, context)
                    attempt = 0  # held until a replica was back: resends count afresh, the hold limit bounds them
                sent = time.monotonic()
                upstream.begin()
                code = grpc.StatusCode.OK
                try:
                    response = await upstream.unary(method)(request, timeout=context.time_remaining(), metadata=metadata)
                    ejector.record(upstream.key, True, sent)
                    if span is not None:
                        span.set_attribute("ebbflow.replica", upstream.entry.replica_id)
                        span.set_attribute("ebbflow.attempts", attempt + 1)
                    return response
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    if code != _RETRYABLE:
                        raise Refusal(code, error.details() or f"replica {upstream.key} failed with {code.name}") from None
                    if ejector.record(upstream.key, False, time.monotonic()):
                        log.warning("replica %s ejected for %g s after repeated failures", upstream.key, self.config.eject_s)
                        self.metrics.ejections.labels(model, upstream.entry.replica_id).inc()
                    remaining = context.time_remaining()
                    if not keep_for_retry or attempt >= self.config.max_retries or (remaining is not None and remaining <= 0):
                        raise Refusal(code, f"replica {upstream.key} unavailable and no retry left: {error.details()}") from None
                    log.info("replica %s of %s unavailable (%s); resending elsewhere", upstream.key, model, error.details())
                    attempt += 1
                    avoid.add(upstream.key)
                    self.metrics.retries.labels(model).inc()
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                finally:
                    self.upstreams.finished(upstream, code, time.monotonic() - sent)
        finally:
            if keep_for_retry:
                self._retry_budget.give_back(size)
