"""The router's tenant check (keys, models, request and token rates) and the tokens a request asks for."""

from __future__ import annotations

import json
import struct

import grpc
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2

from ebbflow.router import demand
from ebbflow.router.tenants import Denial, Gate
from ebbflow.runtime.keys import bearer, key_hash
from ebbflow.v1 import tenant_pb2


def tenants(*entries: tuple[str, tenant_pb2.Tenant]) -> dict[str, tenant_pb2.Tenant]:
    return {key_hash(key): tenant for key, tenant in entries}


ALICE = tenant_pb2.Tenant(name="alice", models=["llm"], requests_per_minute=3)
BOB = tenant_pb2.Tenant(name="bob", tokens_per_minute=20)
GONE = tenant_pb2.Tenant(name="gone", revoked_unix_s=5.0)
KNOWN = tenants(("ka", ALICE), ("kb", BOB), ("kg", GONE))


def denial(gate: Gate, header: str | None, model: str = "llm", tokens: int = 1, now: float = 0.0) -> Denial:
    with pytest.raises(Denial) as caught:
        gate.admit(header, model, lambda: tokens, KNOWN, now)
    return caught.value


def test_without_required_keys_everyone_passes_and_nothing_is_read() -> None:
    assert Gate(False).admit(None, "llm", lambda: 1 / 0, KNOWN, 0.0) is None  # type: ignore[arg-type, return-value]


def test_keys_identify_tenants_and_refusals_say_why() -> None:
    gate = Gate(True)
    assert (denial(gate, None).code, denial(gate, None).reason) == (grpc.StatusCode.UNAUTHENTICATED, "no_key")
    assert denial(gate, "Basic ka").reason == "no_key"  # only bearer keys
    assert denial(gate, "Bearer nope").reason == "bad_key"
    revoked = denial(gate, "Bearer kg")
    assert (revoked.code, revoked.reason, revoked.tenant) == (grpc.StatusCode.UNAUTHENTICATED, "revoked", "gone") and "revoked" in revoked.message
    wrong_model = denial(gate, "Bearer ka", model="llm_stream")
    assert wrong_model.code == grpc.StatusCode.PERMISSION_DENIED and "may not call model 'llm_stream'; its models: llm" in wrong_model.message
    assert gate.admit("bearer  ka ", "llm", lambda: 1, KNOWN, 0.0) is ALICE
    assert bearer("Bearer x") == "x" and bearer(None) == "" and key_hash("x") == key_hash("x") != key_hash("y")


def test_requests_per_minute_allow_a_minutes_burst_then_the_rate_with_a_retry_hint() -> None:
    gate = Gate(True)
    assert [gate.admit("Bearer ka", "llm", lambda: 1, KNOWN, 0.0) for _ in range(3)] == [ALICE] * 3
    over = denial(gate, "Bearer ka", now=1.0)
    assert (over.code, over.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate")
    assert over.retry_after_s == pytest.approx(19.0) and over.retry_after == "19" and over.http_headers() == {"Retry-After": "19"}
    assert gate.admit("Bearer ka", "llm", lambda: 1, KNOWN, 20.0) is ALICE  # one request refilled after 20 s
    assert denial(gate, "Bearer ka", now=20.5).reason == "rate"
    assert denial(gate, None).http_headers() == {"WWW-Authenticate": "Bearer"}


def test_token_budgets_count_what_each_request_asks_for_and_take_nothing_from_a_refused_one() -> None:
    gate = Gate(True)
    assert gate.admit("Bearer kb", "any", lambda: 15, KNOWN, 0.0) is BOB
    over = denial(gate, "Bearer kb", model="any", tokens=10, now=0.0)
    assert over.reason == "tokens" and over.retry_after_s == pytest.approx(15.0) and "20 tokens per minute" in over.message
    assert gate.admit("Bearer kb", "any", lambda: 5, KNOWN, 0.0) is BOB  # the refused request took nothing
    never = denial(gate, "Bearer kb", model="any", tokens=21)
    assert never.reason == "tokens" and "more than tenant 'bob' may use in a minute (20)" in never.message
    # a changed limit starts a full bucket
    richer = tenants(("kb", tenant_pb2.Tenant(name="bob", tokens_per_minute=100)))
    assert gate.admit("Bearer kb", "any", lambda: 90, richer, 1.0).name == "bob"


def test_the_tokens_a_request_asks_for_are_its_prompt_words_plus_max_tokens() -> None:
    assert demand.of_generate(b'{"text_input": "one two three", "max_tokens": 5}') == 8
    assert demand.of_generate(b"{broken") == 0 and demand.of_generate(b"[1]") == 0
    typed = service_pb2.ModelInferRequest(model_name="llm")
    text = typed.inputs.add(name="text_input", datatype="BYTES", shape=[1, 1])
    text.contents.bytes_contents.append(b"a b c d")
    count = typed.inputs.add(name="max_tokens", datatype="INT32", shape=[1, 1])
    count.contents.int_contents.append(6)
    assert demand.of_grpc_infer(typed.SerializeToString()) == 10
    raw = service_pb2.ModelInferRequest(model_name="llm")
    raw.inputs.add(name="text_input", datatype="BYTES", shape=[1, 1])
    raw.inputs.add(name="max_tokens", datatype="INT32", shape=[1, 1])
    raw.raw_input_contents.extend([struct.pack("<I", 3) + b"x y", struct.pack("<i", 7)])
    assert demand.of_grpc_infer(raw.SerializeToString()) == 9
    assert demand.of_grpc_infer(b"\xff\xff") == 0
    for binary in (False, True):  # what tritonclient.http sends, JSON and binary tensor data
        inputs = [triton_http.InferInput("text_input", [1, 1], "BYTES"), triton_http.InferInput("max_tokens", [1, 1], "INT32")]
        inputs[0].set_data_from_numpy(np.array([[b"p q r s t"]], dtype=np.object_), binary_data=binary)
        inputs[1].set_data_from_numpy(np.array([[4]], dtype=np.int32), binary_data=binary)
        body, header_length = triton_http.InferenceServerClient.generate_request_body(inputs)
        assert demand.of_http_infer(body, str(header_length) if header_length else None) == 9, binary
    assert demand.of_http_infer(json.dumps({"inputs": "x"}).encode(), None) == 0
