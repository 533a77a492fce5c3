"""Overload with real parts (nats-server, tritonserver, HAProxy): a model at its max_replicas refuses what is over
its shedding limit at once, gRPC and HTTP, through the Python router and through the front's fast path; below
max_replicas nothing is shed."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from tests.conftest import expected_output, llm_inputs, wait_for
from tests.integration.conftest import RouterBed
from tests.integration.test_router_http import needs_haproxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PROMPT = "alpha beta"
LONG = 1500
"""Output tokens of a request that holds its replica slot for about a second at the test's time scale."""


async def timed(call):  # type: ignore[no-untyped-def]
    """(outcome, seconds): the call's result or its exception, and when it ended."""
    try:
        result = await call
    except Exception as error:  # noqa: BLE001 - the outcome is what is compared
        result = error
    return result, time.monotonic()


@pytest.mark.parametrize("front", [False, pytest.param(True, marks=needs_haproxy)], ids=["python", "front"])
async def test_at_max_replicas_requests_over_the_limit_are_refused_at_once(testbed: RouterBed, front: bool) -> None:
    await testbed.policy("llm", min_replicas=1, max_replicas=1, shed_in_flight_per_replica=2)
    replica = await testbed.replicas.start("llm")
    address = await testbed.router(front=front)
    if front:
        await wait_for(lambda: f"server {replica.entry.replica_id} " in testbed.fronts[0]._rendered and "maxconn 2" in testbed.fronts[0]._rendered, 10, "the limit in the front")
    else:
        await testbed.wait_routable("llm", 1)
    client = triton_aio.InferenceServerClient(address)
    try:
        outcomes = await asyncio.gather(*(timed(client.infer("llm", llm_inputs(PROMPT, LONG))) for _ in range(8)))
        served = [(r, t) for r, t in outcomes if not isinstance(r, Exception)]
        refused = [(r, t) for r, t in outcomes if isinstance(r, Exception)]
        assert len(served) == 2 and len(refused) == 6, [str(r)[:120] for r, _ in refused]
        assert all(r.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, LONG) for r, _ in served)
        for error, _ in refused:
            assert isinstance(error, InferenceServerException) and "RESOURCE_EXHAUSTED" in str(error.status()), error
            assert "overloaded" in (error.message() or "") and "retry after" in (error.message() or "")
        assert max(t for _, t in refused) < min(t for _, t in served), "refused at once, not after queueing behind the admitted"
        # the same over HTTP: 429 with a retry hint
        async with aiohttp.ClientSession() as session:
            url = f"http://{testbed.http_address}/v2/models/llm/generate"

            async def generate(tokens: int) -> tuple[int, str, str]:
                async with session.post(url, json={"text_input": PROMPT, "max_tokens": tokens}) as response:
                    return response.status, response.headers.get("Retry-After", ""), await response.text()

            answers = await asyncio.gather(*(generate(LONG) for _ in range(6)))
            assert sorted(status for status, _, _ in answers) == [200, 200, 429, 429, 429, 429], answers
            assert all(retry and "overloaded" in text for status, retry, text in answers if status == 429)
        # once the load is gone, requests are served again
        result = await client.infer("llm", llm_inputs(PROMPT, 3))
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, 3)
    finally:
        await client.close()
    if not front:
        assert testbed.metric("ebbflow_router_rejections_total", model="llm", reason="overload") == 10


async def test_below_max_replicas_nothing_is_shed(testbed: RouterBed) -> None:
    await testbed.policy("llm", min_replicas=1, max_replicas=2, shed_in_flight_per_replica=2)
    await testbed.replicas.start("llm")
    address = await testbed.router()
    await testbed.wait_routable("llm", 1)
    client = triton_aio.InferenceServerClient(address)
    try:
        results = await asyncio.gather(*(client.infer("llm", llm_inputs(PROMPT, 200)) for _ in range(8)))
    finally:
        await client.close()
    assert [r.as_numpy("text_output").reshape(-1)[0].decode() for r in results] == [expected_output(PROMPT, 200)] * 8
