"""The router's KServe v2 HTTP port: Triton's REST protocol, answered, forwarded or refused like the gRPC one.

`RestRouter` serves `/v2/...` with aiohttp beside the gRPC servicer of the
same `Router`, sharing its upstream table, held requests (router.holding),
ejector and telemetry books, so a model at zero replicas scales up for HTTP
callers exactly as for gRPC ones. Inference (`infer`) and Triton's LLM
endpoints (`generate`, `generate_stream`) are forwarded to a ready replica's
HTTP port over keep-alive connections, the body unchanged; a response is
relayed as it arrives (a `generate_stream` answer event by event, never
buffered whole). A connection that fails before any answer is resent to
another replica (bounded by `max_retries`), as gRPC UNAVAILABLE is.

The router refuses, itself and in Triton's `{"error": ...}` shape: an unknown
model (404), a body that is not a request (400, router.kserve), one over
`router.max_message_bytes` (413), and what cannot cross a router (the
repository and shared-memory endpoints, as for gRPC). Behind the HAProxy
front this server only sees what the front hands it: held requests,
metadata, statistics, readiness and every refusal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from typing import Any, Awaitable, Callable

import aiohttp
import grpc
from aiohttp import web

from ebbflow import __version__
from ebbflow.router import demand
from ebbflow.router.answers import REFUSED_METHODS
from ebbflow.router.holding import NoDeadline
from ebbflow.router.kserve import (
    FORWARDED_ENDPOINTS,
    HEADER_LENGTH,
    BadRequest,
    check_infer_body,
    code_of_status,
    config_json,
    error_body,
    http_status,
    metadata_json,
    parse_json_object,
    parse_model_path,
    sum_statistics_json,
)
from ebbflow.router.openai_http import OpenAIFront
from ebbflow.router.openai_http import refuse as openai_refuse
from ebbflow.router.refusal import Refusal
from ebbflow.router.server import Router
from ebbflow.router.tenants import Denial
from ebbflow.router.upstreams import Upstream

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset(
    ("host", "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length", "expect")
)
_NOT_FORWARDED = _HOP_BY_HOP | {"content-encoding"}
"""Request headers the router does not pass on: hop-by-hop ones, and the body's encoding (aiohttp has decoded
the body, which is checked and forwarded as plain JSON)."""
_RELAYED = ("Content-Type", "Content-Encoding", HEADER_LENGTH)
"""Response headers of a replica the router passes on (the length is its own: it relays, it may chunk)."""
_NO_DEADLINE = NoDeadline()
EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration", "generate"]


def _tokens(endpoint: str, body: bytes, header_length: str | None) -> int:
    return demand.of_http_infer(body, header_length) if endpoint == "infer" else demand.of_generate(body)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(value).encode(), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return web.Response(body=error_body(message), status=status, content_type="application/json")


class RestRouter:
    """KServe v2 HTTP for one `Router` (one router process)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.config = router.config
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.openai = OpenAIFront(self) if self.config.openai else None
        """The OpenAI-compatible API under /v1 (router.openai_http); None when router.openai maps no model."""

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self, host: str, port: int, share_port: bool = False, ssl_context: ssl.SSLContext | None = None) -> int:
        """Serve on host:port (0 picks a free port), over TLS with `ssl_context`; return the port."""
        # No response timeout: a generate_stream answer lasts as long as the model generates; the hold limit
        # and the replica bound everything else.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0),
            timeout=aiohttp.ClientTimeout(total=None, connect=2.0),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        app = web.Application(client_max_size=self.config.max_message_bytes, middlewares=[self._errors])
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        # A client that leaves cancels its handler: a held request stops waiting, a forwarded one is cut upstream.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=share_port or None, ssl_context=ssl_context)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in flight finish for at most `grace_s`, close upstream connections."""
        if self._runner is not None:
            self._runner._shutdown_timeout = grace_s  # aiohttp reads it in cleanup(): how long handlers may finish
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- dispatch -------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Every answer, even aiohttp's own refusals, in Triton's error shape (OpenAI's under /v1); nothing
        unexpected escapes."""
        refuse = openai_refuse if request.path.startswith("/v1/") else _error
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            self.router.metrics.rejections.labels("", "too_large").inc()
            return refuse(413, f"request body is larger than the router accepts ({self.config.max_message_bytes} bytes, router.max_message_bytes)")
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return refuse(error.status, error.reason)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:  # a bug must cost one request, not the router
            log.exception("HTTP %s %s failed", request.method, request.path)
            return refuse(500, "internal router error; see the router's log")

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if path.startswith("/v1/"):
            if self.openai is None:
                return openai_refuse(404, "the OpenAI-compatible API serves no model here (router.openai is empty)")
            return await self.openai.dispatch(request)
        if path in ("/v2/health/live", "/v2/health/ready", "/v2"):
            if method != "GET":
                return _error(405, f"{path} takes GET")
            if path == "/v2/health/live":
                return web.Response(status=200)
            if path == "/v2/health/ready":
                ready = self.router.view.loaded and self.router.bus.nc.is_connected
                return web.Response(status=200) if ready else _error(503, "the router is not connected to the control plane yet")
            return _json({"name": "ebbflow-router", "version": __version__, "extensions": EXTENSIONS})
        if path.startswith(("/v2/repository", "/v2/systemsharedmemory", "/v2/cudasharedmemory", "/v2/trace", "/v2/logging")):
            return self._refused(path)
        where = parse_model_path(path)
        if where is None:
            return _error(404, f"no such endpoint: {path[:200]}; the router serves Triton's KServe v2 HTTP API under /v2")
        model = where.model
        if not self.router.is_known(model):
            self.router.metrics.rejections.labels("", "unknown_model").inc()
            return _error(404, f"unknown model '{model[:200]}'; models served here: {self.router.known_list()}")
        if where.rest in FORWARDED_ENDPOINTS:
            if method != "POST":
                return _error(405, f"{where.rest} takes POST")
            return await self.forward_request(request, model, where.rest)
        if method != "GET":
            return _error(405, f"{path[:200]} takes GET")
        if where.rest == "":
            return await self._answer(request, model, lambda c: _json(metadata_json(c)))
        if where.rest == "config":
            return await self._answer(request, model, lambda c: _json(config_json(c)))
        if where.rest == "ready":
            policy = self.router.view.policies.get(model)
            ready = bool(self.router.upstreams.ready.get(model)) or (policy is not None and policy.max_replicas > 0)
            return web.Response(status=200) if ready else _error(503, f"model '{model}' has no ready replica and may not scale up")
        if where.rest == "stats":
            return await self.statistics(request, model)
        return _error(404, f"no such endpoint: {path[:200]}")

    def _refused(self, path: str) -> web.Response:
        method = "RepositoryIndex" if path.startswith("/v2/repository") else "SystemSharedMemoryStatus"
        if path.startswith("/v2/trace"):
            method = "TraceSetting"
        elif path.startswith("/v2/logging"):
            method = "LogSettings"
        code, message = REFUSED_METHODS[method]
        return _error(http_status(code.name), message)

    # ---- answers from a replica, or from the config -----------------------------------

    async def _answer(self, request: web.Request, model: str, from_config: Callable[[Any], web.Response]) -> web.StreamResponse:
        """Forwarded to a ready replica; built from the model's config when none is (no need to wait for one)."""
        config = self.router.view.model_configs.get(model)
        if self.router.upstreams.ready.get(model) or config is None:
            return await self.forward_request(request, model, None)
        return from_config(config)

    async def statistics(self, request: web.Request, model: str) -> web.Response:
        """Statistics summed over every ready replica (zeros at zero replicas)."""
        assert self._session is not None
        ready = list(self.router.upstreams.ready.get(model, ()))

        async def one(upstream: Upstream) -> Any:
            async with self._session.get(self._url(upstream, request.path_qs)) as answer:  # type: ignore[union-attr]
                if answer.status != 200:
                    raise ValueError(f"HTTP {answer.status}: {(await answer.text())[:200]}")
                return await answer.json(content_type=None)

        answers = await asyncio.gather(*(one(u) for u in ready), return_exceptions=True)
        replies = [a for a in answers if isinstance(a, dict)]
        if ready and not replies:
            return _error(503, f"no replica of '{model}' answered statistics: {answers[0]}")
        return _json(sum_statistics_json(model, replies))

    # ---- forwarding -----------------------------------------------------------------

    @staticmethod
    def _url(upstream: Upstream, path_qs: str) -> str:
        return f"http://{upstream.entry.host}:{upstream.entry.http_port}{path_qs}"

    async def forward_request(self, request: web.Request, model: str, endpoint: str | None) -> web.StreamResponse:
        """Check the body (an inference endpoint's), then forward it with the client's headers to a ready replica,
        held while there is none; the answer is relayed as it arrives. endpoint None: a GET (metadata, config)."""
        limit = self.config.max_message_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        body = await request.read()
        try:
            if endpoint == "infer":
                check_infer_body(body, request.headers.get(HEADER_LENGTH))
            elif endpoint is not None:
                parse_json_object(body)
        except BadRequest as error:
            self.router.metrics.rejections.labels(model, "malformed").inc()
            return _error(400, f"malformed {endpoint} request for model '{model}': {error}")
        if endpoint is not None:
            try:
                self.router.admit(request.headers.get("Authorization"), model, lambda: _tokens(endpoint, body, request.headers.get(HEADER_LENGTH)))
            except Denial as denial:
                response = _error(http_status(denial.code.name), denial.message)
                response.headers.update(denial.http_headers())
                return response
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        sending = self.send(model, request.method, request.path_qs, body, headers, lambda answer: self._relay(request, answer), _error)
        if endpoint is None:
            return await sending
        return await self.counted(model, sending)

    async def counted(self, model: str, sending: Awaitable[web.StreamResponse]) -> web.StreamResponse:
        """An inference request in the model's books (arrival, answer, latency) while `sending` answers it."""
        started = time.monotonic()
        books = self.router.telemetry.books(model, started)
        books.accept(started)
        code = grpc.StatusCode.OK
        try:
            response = await sending
            code = grpc.StatusCode[code_of_status(response.status)]
            return response
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            raise
        finally:
            books.answered(code, time.monotonic(), started)

    async def send(
        self,
        model: str,
        method: str,
        path_qs: str,
        body: bytes,
        headers: dict[str, str],
        respond: Callable[[aiohttp.ClientResponse], Awaitable[web.StreamResponse]],
        refuse: Callable[[int, str], web.StreamResponse],
    ) -> web.StreamResponse:
        """One request on a ready replica (held while there is none), resent elsewhere after a connection failure
        before any answer (bounded); `respond` turns the replica's answer into the client's, `refuse` (HTTP
        status, message) answers what the router refuses itself."""
        assert self._session is not None
        upstreams, holds = self.router.upstreams, self.router.holds
        hold_until = time.monotonic() + self.config.hold_timeout_s
        avoid: set[str] = set()
        attempt = 0
        while True:
            try:
                upstream = upstreams.pick(model, avoid)
                if upstream is None:
                    upstream = await holds.acquire(model, len(body), avoid, hold_until, _NO_DEADLINE)
                    attempt = 0  # held until a replica was back: resends count afresh, the hold limit bounds them
            except Refusal as refusal:
                return refuse(http_status(refusal.code.name), refusal.message)
            sent = time.monotonic()
            upstream.begin()
            code = grpc.StatusCode.OK
            try:
                answer = await self._session.request(method, self._url(upstream, path_qs), data=body or None, headers=headers)
            except aiohttp.ClientConnectionError as error:
                code = grpc.StatusCode.UNAVAILABLE
                upstreams.finished(upstream, code, time.monotonic() - sent)
                if upstreams.ejector.record(upstream.key, False, time.monotonic()):
                    log.warning("replica %s ejected for %g s after repeated failures", upstream.key, self.config.eject_s)
                    self.router.metrics.ejections.labels(model, upstream.entry.replica_id).inc()
                if attempt >= self.config.max_retries:
                    return refuse(503, f"replica {upstream.key} unavailable and no retry left: {error}")
                attempt += 1
                avoid.add(upstream.key)
                self.router.metrics.retries.labels(model).inc()
                continue
            except BaseException:
                upstreams.finished(upstream, grpc.StatusCode.CANCELLED, time.monotonic() - sent)
                raise
            upstreams.ejector.record(upstream.key, True, sent)
            try:
                code = grpc.StatusCode[code_of_status(answer.status)]
                return await respond(answer)
            except BaseException:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                answer.release()
                upstreams.finished(upstream, code, time.monotonic() - sent)

    async def _relay(self, request: web.Request, answer: aiohttp.ClientResponse) -> web.StreamResponse:
        """The replica's answer to the client: whole when it says how long it is, else chunk by chunk as it comes."""
        headers = {k: answer.headers[k] for k in _RELAYED if k in answer.headers}
        if answer.content_length is not None:
            return web.Response(status=answer.status, body=await answer.read(), headers=headers)
        response = web.StreamResponse(status=answer.status, headers=headers)
        await response.prepare(request)
        async for chunk in answer.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
