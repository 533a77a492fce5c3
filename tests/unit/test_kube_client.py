"""The Kubernetes client's edges: the API server's Status answers become our errors, and watches parse and end.

A small aiohttp server stands in for the API server here (the client's translation of answers is pure logic); the
client against the real kube-apiserver is in tests/integration/test_kubernetes.py.
"""

from __future__ import annotations

import json
from typing import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from ebbflow.kube.client import ConflictError, ForbiddenError, KubeClient, KubeCredentials, KubeError, KubeNotFoundError, WatchExpiredError
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.process import free_port


def status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}
    return web.json_response(body, status=code)


async def handler(request: web.Request) -> web.StreamResponse:
    assert request.headers["Authorization"] == "Bearer t0ken"
    name = request.match_info["name"]
    if name == "conflict":
        return status(409, "Conflict", 'Operation cannot be fulfilled on deployments.apps "x": the object has been modified')
    if name == "forbidden":
        return status(403, "Forbidden", 'deployments.apps "x" is forbidden: User "ebbflow" cannot patch resource "deployments"')
    if name == "missing":
        return status(404, "NotFound", 'deployments.apps "missing" not found')
    if name == "broken":
        return web.Response(status=500, text="not json")
    if name == "watch":
        response = web.StreamResponse()
        await response.prepare(request)
        for event in (
            {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
            {"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "6"}}},
        ):
            await response.write(json.dumps(event).encode() + b"\n")
        if request.query["resourceVersion"] == "1":
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 1 (5)"}
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
        return response
    return web.json_response({"name": name, "method": request.method, "body": await request.text(), "type": request.content_type})


@pytest_asyncio.fixture
async def client() -> AsyncIterator[KubeClient]:
    app = web.Application()
    app.router.add_route("*", "/things/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    async with KubeClient(KubeCredentials(f"http://127.0.0.1:{port}", "t0ken"), timeout_s=2.0) as kube:
        yield kube
    await runner.cleanup()


async def test_answers_become_typed_errors(client: KubeClient) -> None:
    with pytest.raises(ConflictError, match="has been modified.*re-read the object and retry") as conflict:
        await client.replace("/things/conflict", {"spec": {}})
    assert conflict.value.status == 409 and conflict.value.reason == "Conflict"
    with pytest.raises(ForbiddenError, match='cannot patch resource "deployments".*grant the verb'):
        await client.merge_patch("/things/forbidden", {})
    with pytest.raises(KubeNotFoundError, match="not found"):
        await client.get("/things/missing")
    with pytest.raises(KubeError, match="500.*not json"):
        await client.get("/things/broken")
    assert client.requests == 4


async def test_requests_carry_json_and_the_patch_type(client: KubeClient) -> None:
    answer = await client.strategic_patch("/things/pod", {"status": {"phase": "Running"}})
    assert answer["method"] == "PATCH" and answer["type"] == "application/strategic-merge-patch+json"
    assert json.loads(answer["body"]) == {"status": {"phase": "Running"}}


async def test_watch_yields_events_and_an_expired_version_is_an_error(client: KubeClient) -> None:
    seen = [(kind, obj["metadata"]["resourceVersion"]) async for kind, obj in client.watch("/things/watch", "4")]
    assert seen == [("ADDED", "5"), ("MODIFIED", "6")]
    seen.clear()
    with pytest.raises(WatchExpiredError, match="too old resource version"):
        async for kind, obj in client.watch("/things/watch", "1"):
            seen.append((kind, obj["metadata"]["resourceVersion"]))
    assert len(seen) == 2


async def test_no_server_is_unavailable() -> None:
    async with KubeClient(KubeCredentials(f"http://127.0.0.1:{free_port()}", "t"), timeout_s=1.0) as kube:
        with pytest.raises(UnavailableError, match="did not answer GET /api"):
            await kube.get("/api")
