"""KServe v2 HTTP through the router, with real parts: haproxy, nats-server, tritonserver replicas.

`tritonclient.http` and raw HTTP (what curl sends) against the router's HTTP
port: through the HAProxy front (inference of a model with ready replicas
never reaches the Python router) and through the Python router alone (what
the front hands it: held requests at zero replicas, metadata, statistics,
refusals). Triton's generate and generate_stream are forwarded the same way,
a stream event by event.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import socket
import sys
import time
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_http_aio
from tritonclient.utils import np_to_triton_dtype

from ebbflow.router.front import haproxy_binary
from tests.conftest import expected_output, wait_for
from tests.integration.conftest import RouterBed
from tests.integration.test_router_front import python_router_calls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
needs_haproxy = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (make test installs it: apt-get install haproxy)")
PROMPT = "alpha beta gamma delta"
REPO = Path(__file__).resolve().parents[2]


def http_inputs(prompt: str, max_tokens: int, binary: bool) -> list[triton_http.InferInput]:
    text = np.array([[prompt.encode()]], dtype=np.object_)
    tokens = np.array([[max_tokens]], dtype=np.int32)
    inputs = [triton_http.InferInput("text_input", [1, 1], "BYTES"), triton_http.InferInput("max_tokens", [1, 1], np_to_triton_dtype(tokens.dtype))]
    inputs[0].set_data_from_numpy(text, binary_data=binary)
    inputs[1].set_data_from_numpy(tokens, binary_data=binary)
    return inputs


def text_of(result: triton_http.InferResult) -> str:
    value = result.as_numpy("text_output").reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_events(response: aiohttp.ClientResponse, arrivals: list[float] | None = None) -> list[dict]:
    """Server-sent events of a generate_stream answer, each `data: {...}` block parsed (and its arrival time
    appended to `arrivals`)."""
    events, buffer = [], b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            assert block.startswith(b"data: "), block
            events.append(json.loads(block[len(b"data: ") :]))
            if arrivals is not None:
                arrivals.append(time.monotonic())
    assert buffer.strip() == b"", buffer
    return events


async def generate(
    session: aiohttp.ClientSession, base: str, model: str, max_tokens: int, stream: bool, arrivals: list[float] | None = None
) -> tuple[int, list[dict]]:
    """POST generate or generate_stream as curl would: JSON in, JSON or server-sent events out."""
    endpoint = "generate_stream" if stream else "generate"
    async with session.post(f"{base}/v2/models/{model}/{endpoint}", json={"text_input": PROMPT, "max_tokens": max_tokens}) as response:
        if stream:
            return response.status, await read_events(response, arrivals)
        return response.status, [await response.json(content_type=None)]


async def check_tritonclient(address: str, mode: str) -> None:
    """tests/integration/http_client_check.py against `address`: the blocking tritonclient.http, in its own process."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.http_client_check", address, mode, cwd=REPO, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, output.decode()


@needs_haproxy
async def test_tritonclient_http_and_generate_through_the_front_stay_off_the_python_router(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    await testbed.policy("llm_stream")
    await testbed.replicas.start("llm")
    stream_replica = await testbed.replicas.start("llm_stream")
    await testbed.router(front=True)
    front = testbed.fronts[0]
    await wait_for(lambda: f"server {stream_replica.entry.replica_id} " in front._rendered, 10, "replicas in the front")
    base = f"http://{testbed.http_address}"
    # metadata, statistics and readiness go to the Python router (which asks a replica); inference never does
    await check_tritonclient(testbed.http_address, "served")
    async with aiohttp.ClientSession() as session:
        before = python_router_calls(testbed, "llm")
        status, (answer,) = await generate(session, base, "llm", 6, stream=False)
        assert status == 200 and answer["text_output"] == expected_output(PROMPT, 6)
        status, events = await generate(session, base, "llm_stream", 8, stream=True)
        assert status == 200
        assert " ".join(e["text_output"] for e in events) == expected_output(PROMPT, 8) and len(events) == 8, "one event per token"
        client = triton_http_aio.InferenceServerClient(testbed.http_address)
        try:
            results = await asyncio.gather(*(client.infer("llm", http_inputs(PROMPT, n, True)) for n in range(1, 9)))
        finally:
            await client.close()
        assert [text_of(r) for r in results] == [expected_output(PROMPT, n) for n in range(1, 9)]
        assert python_router_calls(testbed, "llm") == before and python_router_calls(testbed, "llm_stream") == 0, "fast path only"


@pytest.mark.parametrize("front", [False, pytest.param(True, marks=needs_haproxy)], ids=["python", "front"])
async def test_at_zero_http_requests_are_held_then_served(testbed: RouterBed, front: bool) -> None:
    await testbed.policy("llm", min_replicas=0)
    await testbed.policy("llm_stream", min_replicas=0)
    await testbed.router(front=front)
    base = f"http://{testbed.http_address}"
    # at zero: metadata from the model's config, ready (requests would be held), statistics all zero
    await check_tritonclient(testbed.http_address, "zero")
    client = triton_http_aio.InferenceServerClient(testbed.http_address)
    async with aiohttp.ClientSession() as session:
        if not front:  # a client that gives up while held leaves the hold queue (HAProxy 2.6 does not pass an HTTP/1.1 client's close on)
            with pytest.raises(asyncio.TimeoutError):
                await session.post(f"{base}/v2/models/llm/generate", json={"text_input": PROMPT, "max_tokens": 2}, timeout=aiohttp.ClientTimeout(total=0.5))
            await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm") == 0, 5, "the abandoned request out of the hold")
        try:
            held = [asyncio.create_task(client.infer("llm", http_inputs(PROMPT, n, n % 2 == 0))) for n in (5, 6)]
            held_generate = asyncio.create_task(generate(session, base, "llm", 4, stream=False))
            arrivals: list[float] = []
            held_stream = asyncio.create_task(generate(session, base, "llm_stream", 120, stream=True, arrivals=arrivals))
            await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm") == 3, 10, "three llm requests held")
            await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm_stream") == 1, 10, "the stream held")
            await asyncio.gather(testbed.replicas.start("llm"), testbed.replicas.start("llm_stream"))
            results = await asyncio.gather(*held)
            assert [text_of(r) for r in results] == [expected_output(PROMPT, n) for n in (5, 6)]
            status, (answer,) = await held_generate
            assert status == 200 and answer["text_output"] == expected_output(PROMPT, 4)
            status, events = await held_stream
            assert status == 200 and [e["text_output"] for e in events] == expected_output(PROMPT, 120).split(" ")
            # relayed as generated, not buffered whole: 120 tokens take ~60-180 ms at this time scale
            assert arrivals[-1] - arrivals[0] > 0.03, f"events arrived within {1000 * (arrivals[-1] - arrivals[0]):.1f} ms"
        finally:
            await client.close()
    assert python_router_calls(testbed, "llm") == 3


def raw_request(address: str, data: bytes) -> bytes:
    """Bytes on a fresh connection, the answer's first line (b"" when the server just closed it)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(data)
        try:
            return connection.recv(4096).split(b"\r\n", 1)[0]
        except (ConnectionResetError, TimeoutError):
            return b""


@pytest.mark.parametrize("front", [False, pytest.param(True, marks=needs_haproxy)], ids=["python", "front"])
async def test_bad_http_requests_get_clean_4xx_and_the_router_keeps_serving(testbed: RouterBed, front: bool) -> None:
    await testbed.policy("llm")
    replica = await testbed.replicas.start("llm")
    await testbed.router(front=front, max_message_bytes=1 << 20)
    if front:
        await wait_for(lambda: f"server {replica.entry.replica_id} " in testbed.fronts[0]._rendered, 10, "the replica in the front")
    else:
        await testbed.wait_routable("llm", 1)
    base = f"http://{testbed.http_address}"
    good = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1, 1], "data": [PROMPT]},
                       {"name": "max_tokens", "datatype": "INT32", "shape": [1, 1], "data": [3]}]}  # fmt: skip
    async with aiohttp.ClientSession() as session:

        async def post(path: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
            async with session.post(f"{base}{path}", data=data, headers=headers) as response:
                text = await response.read()
                return response.status, json.loads(text) if text else {}

        status, body = await post("/v2/models/nope/infer", json.dumps(good).encode())
        assert status == 404 and "unknown model 'nope'" in body["error"] and "llm" in body["error"]
        status, body = await post("/v2/models/nope/generate", b'{"text_input": "x"}')
        assert status == 404 and "error" in body
        for path in ("/v2/models/llm/infer", "/v2/models/llm/generate"):
            status, body = await post(path, b"{not json")
            assert status == 400 and "error" in body, (path, status, body)
        status, body = await post("/v2/models/llm/infer", b"x" * (2 << 20))
        assert status == 413 and "router.max_message_bytes" in body["error"]
        # A small fuzz: random bodies and header values on the forwarded endpoints give clean 4xx, never 5xx.
        rng = random.Random(21)
        seen = set()
        for _ in range(60):
            path = rng.choice(["/v2/models/llm/infer", "/v2/models/llm/generate", "/v2/models/llm/generate_stream", "/v2/models/llm/versions/1/infer"])
            kind = rng.randrange(4)
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            if kind == 1:
                data = json.dumps(rng.choice([[], 1, "s", None, {"inputs": 5}, {"inputs": [{"x": 1}]}, {"text_input": 3}])).encode()
            headers = {}
            if kind == 2:
                headers["Inference-Header-Content-Length"] = rng.choice(["-1", "abc", "99999", str(len(data) + 1), ""])
                data = json.dumps(good).encode()
            if kind == 3:
                headers["Content-Type"] = rng.choice(["application/octet-stream", "multipart/form-data", "application/json; charset=utf-16", "x" * 300])
            status, body = await post(path, data, headers)
            seen.add(status)
            assert 400 <= status < 500 and "error" in body, (path, kind, data[:60], headers, status, body)
        # broken HTTP itself: answered 400 or the connection closed, nothing else
        for garbage in (b"GARBAGE\r\n\r\n", b"POST /v2/models/llm/infer HTTP/1.1\r\nContent-Length: zz\r\n\r\n", b"\x00\xff" * 50 + b"\r\n\r\n"):
            first = await asyncio.to_thread(raw_request, testbed.http_address, garbage)
            assert first == b"" or first.split(b" ")[1].startswith(b"4"), first
        # still serving, a gzip-compressed request too (tritonclient.http's request_compression_algorithm)
        status, body = await post("/v2/models/llm/infer", json.dumps(good).encode())
        assert status == 200 and body["outputs"][0]["data"] == [expected_output(PROMPT, 3)]
        status, body = await post("/v2/models/llm/infer", gzip.compress(json.dumps(good).encode()), {"Content-Encoding": "gzip"})
        assert status == 200 and body["outputs"][0]["data"] == [expected_output(PROMPT, 3)], body
