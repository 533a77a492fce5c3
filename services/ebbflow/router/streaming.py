"""ModelStreamInfer through the router: bytes relayed response by response, TTFT and TPOT measured.

A client stream may name several models; each gets one upstream stream to
one replica, chosen when the model is first named (and held for, like a
unary request, while the model has no ready replica). Streams are never
resent: once a request is on a replica, its tokens come from there. A client
cancel or deadline cancels every upstream stream, and Triton tells the model
(the emulator stops generating).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator

import grpc
from tritonclient.grpc import service_pb2

from ebbflow.router import demand
from ebbflow.router.core import MalformedRequest, read_request_head, read_stream_response
from ebbflow.router.refusal import Refusal
from ebbflow.router.telemetry import ModelBooks
from ebbflow.router.tenants import Denial
from ebbflow.router.upstreams import Upstream

if TYPE_CHECKING:
    from ebbflow.router.server import Router

_END = object()


@dataclass
class _Sent:
    sent_s: float
    last_s: float = 0.0
    responses: int = 0
    first_s: float = -1.0


@dataclass
class _Link:
    """One upstream stream: the replica, the call, and the requests it still owes responses for."""

    model: str
    upstream: Upstream
    call: Any
    books: ModelBooks
    decoupled: bool
    owed: dict[str, collections.deque[_Sent]] = field(default_factory=dict)
    pump: asyncio.Task[None] | None = None


def _error_response(message: str) -> bytes:
    return service_pb2.ModelStreamInferResponse(error_message=message).SerializeToString()


class StreamRelay:
    def __init__(self, router: "Router", context: grpc.aio.ServicerContext) -> None:
        self.router = router
        self.context = context
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.links: dict[str, _Link] = {}
        self.metadata = router.upstream_metadata(context)
        self.authorization = dict(context.invocation_metadata() or ()).get("authorization")
        self._parts = 0
        self._hold_until = time.monotonic() + router.config.hold_timeout_s

    async def run(self, request_iterator: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        self._parts = 1
        reader = asyncio.create_task(self._read(request_iterator))
        try:
            while True:
                item = await self.out.get()
                if item is _END:
                    return
                if isinstance(item, Refusal):
                    await self.context.abort(item.code, item.message)
                yield item
        finally:
            reader.cancel()
            for link in self.links.values():
                link.call.cancel()
                if link.pump is not None:
                    link.pump.cancel()
            await asyncio.gather(reader, *(link.pump for link in self.links.values() if link.pump), return_exceptions=True)
            for link in self.links.values():
                self._settle(link, grpc.StatusCode.CANCELLED)

    def _part_done(self) -> None:
        self._parts -= 1
        if self._parts == 0:
            self.out.put_nowait(_END)

    async def _read(self, request_iterator: AsyncIterator[bytes]) -> None:
        try:
            async for raw in request_iterator:
                try:
                    head = read_request_head(raw)
                except MalformedRequest as error:
                    self.out.put_nowait(_error_response(f"malformed request: {error}"))
                    continue
                if not self.router.is_known(head.model):
                    self.out.put_nowait(_error_response(f"unknown model '{head.model}'; models served here: {self.router.known_list()}"))
                    continue
                try:
                    self.router.admit(self.authorization, head.model, lambda: demand.of_grpc_infer(raw))
                except Denial as denial:
                    retry = f" (retry-after {denial.retry_after} s)" if denial.retry_after_s else ""
                    self.out.put_nowait(_error_response(f"{denial.code.name}: {denial.message}{retry}"))
                    continue
                link = self.links.get(head.model) or await self._open(head.model, len(raw))
                now = time.monotonic()
                link.owed.setdefault(head.id, collections.deque()).append(_Sent(sent_s=now))
                link.upstream.begin()
                link.books.accept(now)
                await link.call.write(raw)
            for link in self.links.values():
                await link.call.done_writing()
        except Refusal as refusal:
            self.out.put_nowait(refusal)
        except grpc.aio.AioRpcError:
            pass  # the upstream ended; its pump reports how
        finally:
            self._part_done()

    async def _open(self, model: str, size: int) -> _Link:
        upstream = await self.router.holds.acquire(model, size, set(), self._hold_until, self.context)
        config = self.router.view.model_configs.get(model)
        decoupled = bool(config and config.model_transaction_policy.decoupled)
        call = upstream.stream()(metadata=self.metadata, timeout=self.context.time_remaining())
        link = _Link(model, upstream, call, self.router.telemetry.books(model, time.monotonic()), decoupled)
        self.links[model] = link
        self._parts += 1
        link.pump = asyncio.create_task(self._pump(link))
        return link

    async def _pump(self, link: _Link) -> None:
        try:
            async for raw in link.call:
                self._account(link, raw)
                self.out.put_nowait(raw)
            self._settle(link, grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            self._settle(link, error.code())
            self.out.put_nowait(Refusal(error.code(), error.details() or f"replica {link.upstream.key} ended the stream"))
        finally:
            self._part_done()

    def _account(self, link: _Link, raw: bytes) -> None:
        """TTFT on a request's first response, TPOT between the next ones, completion on its final one."""
        try:
            head = read_stream_response(raw)
        except MalformedRequest:
            return
        queue = link.owed.get(head.id)
        if not queue:
            return
        sent = queue[0]
        now = time.monotonic()
        metrics = self.router.metrics
        if sent.responses == 0:
            sent.first_s = now
            metrics.ttft.labels(link.model).observe(now - sent.sent_s)
        else:
            metrics.tpot.labels(link.model).observe(now - sent.last_s)
        sent.responses += 1
        sent.last_s = now
        if head.final or head.error or not link.decoupled:
            queue.popleft()
            self._finish(link, sent, grpc.StatusCode.INTERNAL if head.error else grpc.StatusCode.OK, now)

    def _finish(self, link: _Link, sent: _Sent, code: grpc.StatusCode, now: float) -> None:
        self.router.upstreams.finished(link.upstream, code, now - sent.sent_s)
        link.books.answered(code, now, sent.sent_s, sent.first_s - sent.sent_s if sent.first_s >= 0 else -1.0)

    def _settle(self, link: _Link, code: grpc.StatusCode) -> None:
        """The stream ended: whatever it still owed ends with `code`."""
        now = time.monotonic()
        for queue in link.owed.values():
            while queue:
                self._finish(link, queue.popleft(), code, now)
