"""The OpenAI-compatible API on the router's HTTP port: `/v1/models`, `/v1/completions`, `/v1/chat/completions`.

Each request is read into a Triton generate request (router.openai_api) and
sent like any other inference through the router: to the least-loaded ready
replica of the Triton model its mapping names, held while that model scales
up from zero, resent after a connection failure, counted in the model's
telemetry. The replica's answer comes back in OpenAI's shape; with
`stream: true` each piece the replica streams is relayed as one server-sent
event as it arrives. Behind the HAProxy front these paths reach this server
(the front forwards only `/v2/.../infer|generate` itself).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, AsyncIterator

import aiohttp
from aiohttp import web

from ebbflow.router.kserve import http_status
from ebbflow.router.openai_api import DONE, Catalogue, Generation, Kind, OpenAIError, count_tokens, error_of_status
from ebbflow.router.tenants import Denial

if TYPE_CHECKING:
    from ebbflow.router.rest import RestRouter

PATHS: dict[str, Kind] = {"/v1/completions": "completion", "/v1/chat/completions": "chat"}
_TRACE_HEADERS = ("traceparent", "tracestate")


def refusal(error: OpenAIError) -> web.Response:
    return web.Response(body=error.body(), status=error.status, content_type="application/json")


def refuse(status: int, message: str) -> web.Response:
    """A router refusal (no replica in time, too many held, ...) in OpenAI's error shape."""
    return refusal(error_of_status(status, message))


class OpenAIFront:
    """`/v1/...` for one RestRouter."""

    def __init__(self, rest: RestRouter) -> None:
        self.rest = rest
        self.catalogue = Catalogue(rest.config.openai)
        self.created = int(time.time())

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                return refuse(405, f"{path[:200]} takes GET")
            if path == "/v1/models":
                return _json(self.catalogue.listing(self.created))
            name = path[len("/v1/models/") :]
            if name not in self.catalogue.models:
                return refusal(OpenAIError(404, f"the model '{name[:200]}' does not exist", param="model", code="model_not_found"))
            return _json(self.catalogue.model_object(name, self.created))
        kind = PATHS.get(path)
        if kind is None:
            return refuse(404, f"no such endpoint: {path[:200]}; the OpenAI-compatible API serves /v1/models, /v1/completions and /v1/chat/completions")
        if method != "POST":
            return refuse(405, f"{path} takes POST")
        return await self.generate(request, kind)

    async def generate(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        router, limit = self.rest.router, self.rest.config.max_message_bytes
        if request.content_length is not None and request.content_length > limit:
            router.metrics.rejections.labels("", "too_large").inc()
            return refuse(413, f"request body is larger than the router accepts ({limit} bytes, router.max_message_bytes)")
        try:
            generation = self.catalogue.read(kind, await request.read(), time.time())
        except OpenAIError as error:
            router.metrics.rejections.labels("", "malformed").inc()
            return refusal(error)
        model = generation.triton_model
        if not router.is_known(model):
            router.metrics.rejections.labels("", "unknown_model").inc()
            return refuse(404, f"model '{generation.name}' maps to Triton model '{model}', which no policy or replica serves here (router.openai)")
        try:
            router.admit(request.headers.get("Authorization"), model, lambda: generation.prompt_tokens + generation.max_tokens)
        except Denial as denial:
            response = refuse(http_status(denial.code.name), denial.message)
            response.headers.update(denial.http_headers())
            return response
        headers = {"Content-Type": "application/json", **{k: request.headers[k] for k in _TRACE_HEADERS if k in request.headers}}
        path = f"/v2/models/{model}/{generation.endpoint}"
        return await self.rest.counted(
            model, self.rest.send(model, "POST", path, generation.body, headers, lambda answer: self.answer(request, generation, answer), refuse)
        )

    async def answer(self, request: web.Request, generation: Generation, answer: aiohttp.ClientResponse) -> web.StreamResponse:
        """The replica's answer in OpenAI's shape: whole, or streamed event by event as the replica streams."""
        where = f"model '{generation.name}' (Triton model '{generation.triton_model}')"
        if answer.status != 200:
            return refuse(answer.status, f"{where}: {_triton_error(await answer.read())}")
        output = generation.mapping.output
        if not generation.stream:
            try:
                text = _text(json.loads(await answer.read()), output)
            except ValueError as error:
                return refuse(502, f"{where} answered without a text output '{output}': {error}")
            return _json(generation.response(text))
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        separator, pieces = generation.mapping.stream_separator, []
        failure = None
        async for data in _events(answer.content):
            try:
                value = json.loads(data)
                if isinstance(value, dict) and "error" in value:
                    raise ValueError(str(value["error"]))
                piece = _text(value, output)
            except ValueError as error:
                failure = error_of_status(500, f"{where} failed while streaming: {error}")
                break
            await response.write(generation.chunk(piece if not pieces else separator + piece, first=not pieces))
            pieces.append(piece)
        if failure is not None:
            await response.write(b"data: " + failure.body() + b"\n\n")
        else:
            tokens = count_tokens(separator.join(pieces))
            await response.write(generation.chunk(None, generation.finish_reason(tokens), first=not pieces))
            if generation.include_usage:
                await response.write(generation.usage_chunk(tokens))
            await response.write(DONE)
        await response.write_eof()
        return response


def _json(value: object) -> web.Response:
    return web.Response(body=json.dumps(value).encode(), content_type="application/json")


def _text(value: object, output: str) -> str:
    text = value.get(output) if isinstance(value, dict) else None
    if isinstance(text, list) and len(text) == 1:
        text = text[0]
    if not isinstance(text, str):
        raise ValueError(f"no string '{output}' in {json.dumps(value)[:200]}")
    return text


def _triton_error(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:500].decode("utf-8", errors="replace")


async def _events(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent event stream, as they arrive."""
    buffer = b""
    async for chunk in stream.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
            if data:
                yield data
