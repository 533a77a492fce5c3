"""The OpenAI-compatible API on the router's HTTP port, driven by the official `openai` SDK, unchanged.

Real parts: nats-server, tritonserver replicas of the emulated `llm` (unary)
and `llm_stream` (decoupled), HAProxy in front. The default mapping serves
OpenAI model `llm` from `llm` and, with `stream: true`, from `llm_stream`; the
emulated models are deterministic, so every answer's text is checked.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from ebbflow.runtime.config import OpenAIModel
from tests.conftest import expected_output, wait_for
from tests.integration.conftest import RouterBed
from tests.integration.test_router_http import needs_haproxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PROMPT = "alpha beta gamma delta"
CHAT = [{"role": "system", "content": "answer briefly"}, {"role": "user", "content": "alpha beta"}]
CHAT_PROMPT = "system: answer briefly\nuser: alpha beta\nassistant:"
"""CHAT through the default chat template: one `role: content` line per message, then `assistant:`."""


def sdk(bed: RouterBed) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://{bed.http_address}/v1", api_key="unused", max_retries=0, timeout=30)


@needs_haproxy
async def test_the_openai_sdk_completes_and_chats_whole_and_streamed(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    await testbed.policy("llm_stream")
    await asyncio.gather(testbed.replicas.start("llm"), testbed.replicas.start("llm_stream"))
    await testbed.router(front=True)
    await testbed.wait_routable("llm_stream", 1)
    client = sdk(testbed)
    try:
        assert [m.id for m in (await client.models.list()).data] == ["llm"]
        assert (await client.models.retrieve("llm")).owned_by == "ebbflow"

        completion = await client.completions.create(model="llm", prompt=PROMPT, max_tokens=6)
        assert completion.object == "text_completion" and completion.model == "llm"
        assert completion.choices[0].text == expected_output(PROMPT, 6) and completion.choices[0].finish_reason == "length"
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (4, 6, 10)

        chat = await client.chat.completions.create(model="llm", messages=CHAT, max_tokens=5)  # type: ignore[arg-type]
        assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content == expected_output(CHAT_PROMPT, 5)
        assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (len(CHAT_PROMPT.split()), 5)

        # streamed: one event per token as llm_stream generates it, joined into the unary answer's text
        chunks = [c async for c in await client.completions.create(
            model="llm", prompt=PROMPT, max_tokens=8, stream=True, stream_options={"include_usage": True})]  # fmt: skip
        pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
        assert len(pieces) == 8 and "".join(pieces) == expected_output(PROMPT, 8)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8 and chunks[-1].usage.prompt_tokens == 4

        stream = await client.chat.completions.create(model="llm", messages=CHAT, max_tokens=7, stream=True)  # type: ignore[arg-type]
        deltas = [c.choices[0].delta async for c in stream]
        assert deltas[0].role == "assistant"
        assert "".join(d.content or "" for d in deltas) == expected_output(CHAT_PROMPT, 7)
    finally:
        await client.close()
    # the requests count in the models' telemetry like any other inference
    assert testbed.metric("ebbflow_router_requests_total", model="llm_stream", code="OK") >= 2


async def test_openai_requests_are_held_at_zero_then_served(testbed: RouterBed) -> None:
    await testbed.policy("llm", min_replicas=0)
    await testbed.policy("llm_stream", min_replicas=0)
    await testbed.router()
    client = sdk(testbed)
    try:
        unary = asyncio.create_task(client.completions.create(model="llm", prompt=PROMPT, max_tokens=3))
        streamed = asyncio.create_task(client.chat.completions.create(model="llm", messages=CHAT, max_tokens=4, stream=True))  # type: ignore[arg-type]
        await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm") == 1, 10, "the completion held")
        await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm_stream") == 1, 10, "the chat stream held")
        await asyncio.gather(testbed.replicas.start("llm"), testbed.replicas.start("llm_stream"))
        assert (await unary).choices[0].text == expected_output(PROMPT, 3)
        assert "".join([c.choices[0].delta.content or "" async for c in await streamed]) == expected_output(CHAT_PROMPT, 4)
    finally:
        await client.close()


async def test_openai_refusals_come_in_openais_shape_and_the_router_keeps_serving(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    await testbed.policy("llm_stream")
    await asyncio.gather(testbed.replicas.start("llm"), testbed.replicas.start("llm_stream"))
    mapping = (OpenAIModel(name="llm", model="llm", stream_model="llm_stream", stream_separator=" "), OpenAIModel(name="ghost", model="nowhere"))
    await testbed.router(openai=mapping)
    await testbed.wait_routable("llm_stream", 1)
    client = sdk(testbed)
    try:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.completions.create(model="gpt-4", prompt=PROMPT)
        assert missing.value.code == "model_not_found" and "'gpt-4' does not exist" in missing.value.message and "llm" in missing.value.message
        with pytest.raises(openai.NotFoundError, match="Triton model 'nowhere'"):
            await client.completions.create(model="ghost", prompt=PROMPT)
        with pytest.raises(openai.BadRequestError, match="n must be 1") as several:
            await client.completions.create(model="llm", prompt=PROMPT, n=2)
        assert several.value.param == "n"
        with pytest.raises(openai.BadRequestError, match="messages"):
            await client.chat.completions.create(model="llm", messages=[])
        with pytest.raises(openai.BadRequestError, match="max_tokens must be a positive integer"):
            await client.completions.create(model="llm", prompt=PROMPT, max_tokens=0)
        # the model's own refusal (its limit is 4096 tokens), whole and while streaming
        with pytest.raises(openai.BadRequestError, match="max_tokens must be between 0 and 4096"):
            await client.completions.create(model="llm", prompt=PROMPT, max_tokens=5000)
        with pytest.raises(openai.APIError, match="max_tokens must be between 0 and 4096"):
            async for _ in await client.completions.create(model="llm", prompt=PROMPT, max_tokens=5000, stream=True):
                pass
    finally:
        await client.close()
    async with aiohttp.ClientSession() as session:
        base = f"http://{testbed.http_address}"
        for path, data in (("/v1/completions", b"{not json"), ("/v1/chat/completions", b"[1, 2]"), ("/v1/completions", b'{"model": "llm", "prompt": [1, 2]}')):
            async with session.post(base + path, data=data) as response:
                body = json.loads(await response.read())
                assert response.status == 400 and body["error"]["type"] == "invalid_request_error", (path, body)
        async with session.get(base + "/v1/completions") as response:
            assert response.status == 405 and "takes POST" in (await response.json())["error"]["message"]
        async with session.post(base + "/v1/embeddings", json={"model": "llm", "input": "x"}) as response:
            assert response.status == 404 and "/v1/completions" in (await response.json())["error"]["message"]
    client = sdk(testbed)
    try:
        assert (await client.completions.create(model="llm", prompt=PROMPT, max_tokens=2)).choices[0].text == expected_output(PROMPT, 2)
    finally:
        await client.close()
