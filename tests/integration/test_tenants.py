"""Tenants end to end with real parts: `ebbflow tenant` against a running stack (nats-server, tritonserver,
the HAProxy front where installed), then every refusal proven on every front: gRPC (unary and stream),
KServe v2 HTTP and the OpenAI API."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import openai
import pytest
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from ebbflow import cli
from ebbflow.policy import ModelPolicy
from ebbflow.router.haproxy import render
from ebbflow.stack import Stack
from ebbflow.up import STATE_FILE
from tests.conftest import expected_output, llm_inputs, wait_for
from tests.integration.conftest import reset_jetstream, stack_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ADMIN = "admin-s3cret"
PROMPT = "alpha beta gamma delta"


def infer_request(max_tokens: int) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="llm")
    text = request.inputs.add(name="text_input", datatype="BYTES", shape=[1, 1])
    text.contents.bytes_contents.append(PROMPT.encode())
    tokens = request.inputs.add(name="max_tokens", datatype="INT32", shape=[1, 1])
    tokens.contents.int_contents.append(max_tokens)
    return request


async def test_tenants_keys_models_and_limits_on_every_front(nats_url: str, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    await reset_jetstream(nats_url)
    config = stack_config(ModelPolicy(model="llm", min_replicas=1, max_replicas=1))
    config = replace(config, router=replace(config.router, require_api_key=True), scheduler=replace(config.scheduler, admin_token=ADMIN))
    stack = Stack(config, nats_url, tmp_path / "state")
    try:
        addresses = await stack.start()
        await stack.wait_serving(["llm"], timeout_s=60)
        state_dir = tmp_path / "cli"
        state_dir.mkdir()
        (state_dir / STATE_FILE).write_text(json.dumps({"control": addresses.control}))

        def tenant(*args: str) -> tuple[int, str]:
            code = cli.main(["tenant", *args, "--state-dir", str(state_dir)])
            captured = capsys.readouterr()
            return code, captured.out + captured.err

        code, out = await asyncio.to_thread(tenant, "add", "alice")
        assert code == 2 and "managing tenants needs the admin token" in out
        monkeypatch.setenv("EBBFLOW_ADMIN_TOKEN", ADMIN)
        keys = {}
        for name, flags in (("alice", ["--models", "llm", "--requests-per-minute", "3"]), ("bob", ["--models", "llm_stream"]),
                            ("carol", ["--tokens-per-minute", "20"]), ("dave", [])):  # fmt: skip
            code, out = await asyncio.to_thread(tenant, "add", name, *flags)
            assert code == 0, out
            keys[name] = re.search(r"API key .*: (ebf_\S+)", out).group(1)  # type: ignore[union-attr]
        code, out = await asyncio.to_thread(tenant, "add", "dave")
        assert code == 2 and "tenant 'dave' exists" in out
        stored = await stack.bus.tenants.get("alice")
        assert keys["alice"].encode() not in stored.value  # only the hash is stored
        await wait_for(lambda: len(stack.view.tenant_of_key) == 4, 5, "the tenants in the view")
        front = stack.router_unit.front

        async def front_current() -> None:
            if front is not None:  # HAProxy reads its tenant maps when it (re)starts
                await wait_for(lambda: front._rendered == render(front.spec, front._backends_now(), front._tenants_now())[0], 10, "the front reloaded")

        await front_current()

        # gRPC: no key, a wrong key, a model not allowed, the request limit with its retry hint
        channel = grpc.aio.insecure_channel(addresses.router)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def call(key: str | None, max_tokens: int = 3) -> grpc.aio.UnaryUnaryCall:
            metadata = (("authorization", f"Bearer {key}"),) if key else ()
            return stub.ModelInfer(infer_request(max_tokens), metadata=metadata, timeout=20)

        for key, code_, text in ((None, grpc.StatusCode.UNAUTHENTICATED, "an API key is required"),
                                 ("ebf_wrong", grpc.StatusCode.UNAUTHENTICATED, "not known"),
                                 (keys["bob"], grpc.StatusCode.PERMISSION_DENIED, "tenant 'bob' may not call model 'llm'")):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(key)
            assert refused.value.code() == code_ and text in (refused.value.details() or ""), refused.value
        registry = stack.router_unit.host.registry

        def python_router_calls() -> float:
            """Calls the Python router sent to replicas: the fast path, where there is a front, sends none."""
            return sum(s.value for m in registry.collect() if m.name == "ebbflow_router_upstream_requests" for s in m.samples if s.name.endswith("_total"))

        before = python_router_calls()
        for _ in range(3):
            reply = await call(keys["alice"])
            assert reply.outputs[0].name == "text_output"
        assert (python_router_calls() == before) == (front is not None), "an allowed key takes the front's fast path"
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await call(keys["alice"])
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "over its limit of 3 requests per minute" in (limited.value.details() or "")
        assert 1 <= int(dict(limited.value.trailing_metadata())["retry-after"]) <= 20
        # the unchanged Triton client, key in its headers; a stream's requests are each checked
        client = triton_aio.InferenceServerClient(addresses.router)
        try:
            result = await client.infer("llm", llm_inputs(PROMPT, 4), headers={"authorization": f"Bearer {keys['dave']}"})
            assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, 4)
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
                await client.infer("llm", llm_inputs(PROMPT, 4))
        finally:
            await client.close()
        await channel.close()

        # HTTP: 401 with WWW-Authenticate, 403, the token budget with Retry-After
        base = f"http://{stack.router_unit.http_address}"
        async with aiohttp.ClientSession() as session:

            async def generate(key: str | None, max_tokens: int) -> tuple[int, dict, Any]:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                async with session.post(f"{base}/v2/models/llm/generate", json={"text_input": PROMPT, "max_tokens": max_tokens}, headers=headers) as r:
                    return r.status, await r.json(content_type=None), r.headers

            status, body, headers = await generate(None, 3)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and "API key is required" in body["error"]
            status, body, _ = await generate(keys["bob"], 3)
            assert status == 403 and "may not call model 'llm'" in body["error"]
            status, body, _ = await generate(keys["carol"], 30)
            assert status == 429 and "more than tenant 'carol' may use in a minute (20)" in body["error"]
            status, body, _ = await generate(keys["carol"], 10)  # 4 prompt words + 10
            assert status == 200 and body["text_output"] == expected_output(PROMPT, 10)
            status, body, headers = await generate(keys["carol"], 10)
            assert status == 429 and "20 tokens per minute" in body["error"] and int(headers["Retry-After"]) >= 1

        # OpenAI API: the SDK's api_key is the tenant's key
        def sdk(key: str) -> openai.AsyncOpenAI:
            return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

        good, bad, limited_sdk = sdk(keys["dave"]), sdk("ebf_wrong"), sdk(keys["carol"])
        try:
            completion = await good.completions.create(model="llm", prompt=PROMPT, max_tokens=2)
            assert completion.choices[0].text == expected_output(PROMPT, 2)
            with pytest.raises(openai.AuthenticationError):
                await bad.completions.create(model="llm", prompt=PROMPT, max_tokens=2)
            with pytest.raises(openai.RateLimitError):
                await limited_sdk.completions.create(model="llm", prompt=PROMPT, max_tokens=12)  # 16 tokens: more than refilled

            # revoked: refused from then on, still listed
            code, out = await asyncio.to_thread(tenant, "revoke", "dave")
            assert code == 0 and "dave" in out and "revoked" in out
            await wait_for(lambda: any(t.revoked_unix_s for t in stack.view.tenant_of_key.values()), 5, "the revocation in the view")
            await front_current()
            with pytest.raises(openai.AuthenticationError, match="revoked"):
                await good.completions.create(model="llm", prompt=PROMPT, max_tokens=2)
        finally:
            await asyncio.gather(good.close(), bad.close(), limited_sdk.close())
        code, out = await asyncio.to_thread(tenant, "list")
        assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["alice", "bob", "carol", "dave"]
        assert "revoked" in out.splitlines()[3] and "3 requests/min" in out.splitlines()[0] and "models: llm_stream" in out.splitlines()[1]
        rejections = {reason: registry.get_sample_value("ebbflow_router_tenant_rejections_total", {"tenant": tenant_, "reason": reason}) or 0
                      for tenant_, reason in (("", "no_key"), ("", "bad_key"), ("bob", "model"), ("alice", "rate"), ("carol", "tokens"), ("dave", "revoked"))}  # fmt: skip
        assert all(rejections.values()), rejections
        assert registry.get_sample_value("ebbflow_router_tenant_requests_total", {"tenant": "alice", "model": "llm"}) == 3
        assert registry.get_sample_value("ebbflow_router_tenant_tokens_total", {"tenant": "carol", "model": "llm"}) == 14
    finally:
        await stack.stop()
