"""The router with real parts: nats-server, tritonserver replicas, unchanged Triton clients.

Replicas come from StaticReplicas (real tritonservers, registered as the
actuator would), so each test controls exactly how many there are, how fast
each is, and when one appears, drains or dies.
"""

from __future__ import annotations

import asyncio
import queue
import time
from typing import Awaitable, Callable

import aiohttp
import grpc
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tritonclient.utils import InferenceServerException

from ebbflow.emulator.tokens import emit_tokens
from ebbflow.runtime import subjects
from ebbflow.v1 import registry_pb2
from tests.conftest import expected_output, llm_inputs, wait_for
from tests.integration.conftest import RouterBed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROMPT = "alpha beta gamma delta"


async def closed_loop(address: str, clients: int, requests_each: int, max_tokens: int = 40) -> list[str]:
    """`clients` concurrent Triton clients, each sending `requests_each` requests; returns the errors."""
    errors: list[str] = []

    async def one() -> None:
        client = triton_aio.InferenceServerClient(address)
        try:
            for _ in range(requests_each):
                try:
                    result = await client.infer("llm", llm_inputs(PROMPT, max_tokens))
                    assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, max_tokens)
                except InferenceServerException as error:
                    errors.append(f"{error.status()}: {error.message()}")
        finally:
            await client.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return errors


async def inference_count(address: str, model: str) -> int:
    client = triton_aio.InferenceServerClient(address)
    try:
        stats = await client.get_inference_statistics(model, as_json=True)
        return int(stats["model_stats"][0].get("inference_count", 0))
    finally:
        await client.close()


async def emulated_prompt_tokens(replica_metrics_url: str) -> float:
    """The replica's own count of prompt tokens its model processed (the emulator's counter)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(replica_metrics_url) as response:
            text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ebbflow_emulated_prompt_tokens_total{"))


async def test_a_prompt_longer_than_the_context_is_refused_and_its_batch_neighbours_are_served(testbed: RouterBed) -> None:
    """40 MB of words (under the 64 MiB message limit) was once served: its emulated prefill of 1,400 s held the
    replica and failed the requests batched with it. The model refuses it itself (direct clients are covered too)."""
    await testbed.policy("llm")
    replica = await testbed.replicas.start("llm")
    address = await testbed.router()
    huge = "w " * (20 * 1000 * 1000)  # 40 MB, 20 M tokens
    for target in (replica.address, address):  # straight to the tritonserver, then through the router
        before = await emulated_prompt_tokens(replica.metrics_url)
        client = triton_aio.InferenceServerClient(target)
        try:
            outcomes = await asyncio.gather(
                client.infer("llm", llm_inputs(huge, 4), client_timeout=120),
                *(client.infer("llm", llm_inputs(f"{PROMPT} {i}", 6), client_timeout=120) for i in range(6)),
                client.infer("llm", llm_inputs(" ".join(["t"] * 4096) + " ", 2), client_timeout=120),  # exactly the context
                return_exceptions=True,
            )
        finally:
            await client.close()
        refused, *served, longest = outcomes
        assert isinstance(refused, InferenceServerException), refused
        assert refused.status() == "StatusCode.INVALID_ARGUMENT" and "more than 4096 tokens" in refused.message(), refused
        for i, result in enumerate(served):
            assert not isinstance(result, Exception), result
            assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(f"{PROMPT} {i}", 6)
        assert not isinstance(longest, Exception), longest
        assert longest.as_numpy("text_output").reshape(-1)[0].decode() == "t t"
        # Only the served prompts cost prefill: none of the refused prompt's 20 M tokens was processed.
        assert await emulated_prompt_tokens(replica.metrics_url) - before == 6 * 5 + 4096


async def test_least_outstanding_sends_fewer_requests_to_a_slow_replica(testbed: RouterBed) -> None:
    """Least-outstanding follows the replicas' speed; round-robin (the control) splits evenly."""
    fast = await testbed.replicas.start("llm", speed_factor=1.0)
    slow = await testbed.replicas.start("llm", speed_factor=0.25)
    shares = {}
    for routing in ("round_robin", "least_outstanding"):
        await testbed.policy("llm", routing=routing)
        address = await testbed.router()
        await testbed.wait_routable("llm", 2)
        before = {r.key: await inference_count(r.address, "llm") for r in (fast, slow)}
        assert await closed_loop(address, clients=6, requests_each=15) == []
        served = {r.key: await inference_count(r.address, "llm") - before[r.key] for r in (fast, slow)}
        shares[routing] = served[slow.key] / sum(served.values())
    assert 0.4 <= shares["round_robin"] <= 0.6, shares
    assert shares["least_outstanding"] < 0.35, shares


async def test_a_request_at_zero_replicas_is_held_until_one_is_ready(testbed: RouterBed) -> None:
    await testbed.policy("llm", min_replicas=0)
    address = await testbed.router()
    wakeups: list[bytes] = []

    async def on_wakeup(message) -> None:  # type: ignore[no-untyped-def]
        wakeups.append(message.data)

    subscription = await testbed.bus.nc.subscribe(subjects.wakeup_subject("llm"), cb=on_wakeup)
    client = triton_aio.InferenceServerClient(address)
    try:
        # Clients that look before they leap still work at zero: answered from the model's config.
        metadata = await client.get_model_metadata("llm", as_json=True)
        assert [i["name"] for i in metadata["inputs"]] == ["text_input", "max_tokens", "stream"]
        assert metadata["inputs"][0]["datatype"] == "BYTES" and metadata["inputs"][0]["shape"] == ["-1", "1"]
        config = await client.get_model_config("llm", as_json=True)
        assert config["config"]["max_batch_size"] == 8
        assert await client.is_model_ready("llm")
        assert not await client.is_model_ready("nope")

        held = [asyncio.create_task(client.infer("llm", llm_inputs(PROMPT, n))) for n in (5, 6, 7)]
        await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm") == 3, 5, "three held requests")
        await wait_for(lambda: len(wakeups) >= 2, 5, "repeated wake-ups while holding")
        assert not any(task.done() for task in held)
        await testbed.replicas.start("llm")
        results = await asyncio.gather(*held)
        assert [r.as_numpy("text_output").reshape(-1)[0].decode() for r in results] == [expected_output(PROMPT, n) for n in (5, 6, 7)]
        assert testbed.metric("ebbflow_router_hold_wait_seconds_count", model="llm") == 3
        assert testbed.metric("ebbflow_router_held", model="llm") == 0
    finally:
        await subscription.unsubscribe()
        await client.close()


async def test_the_hold_queue_is_bounded_and_waits_end_with_a_reason(testbed: RouterBed) -> None:
    await testbed.policy("llm", min_replicas=0)
    address = await testbed.router(hold_max_requests=2, hold_timeout_s=1.5)
    client = triton_aio.InferenceServerClient(address)
    try:
        held = [asyncio.create_task(client.infer("llm", llm_inputs(PROMPT, 3))) for _ in range(2)]
        await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm") == 2, 5, "two held requests")
        with pytest.raises(InferenceServerException) as full:
            await client.infer("llm", llm_inputs(PROMPT, 3))
        assert full.value.status() == "StatusCode.RESOURCE_EXHAUSTED" and "hold queue is full" in full.value.message()
        for task in held:
            with pytest.raises(InferenceServerException) as late:
                await task
            assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED" and "1.5 s hold limit" in late.value.message()
        with pytest.raises(InferenceServerException) as deadline:
            await client.infer("llm", llm_inputs(PROMPT, 3), client_timeout=0.3)
        assert deadline.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    finally:
        await client.close()


async def test_a_replica_killed_mid_load_costs_unary_clients_nothing(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    doomed = await testbed.replicas.start("llm")
    await testbed.replicas.start("llm")
    address = await testbed.router(eject_after_failures=2)
    await testbed.wait_routable("llm", 2)
    load = asyncio.create_task(closed_loop(address, clients=6, requests_each=40))
    await wait_for(lambda: testbed.metric("ebbflow_router_requests_total", model="llm", code="OK") >= 30, 20, "load under way")
    testbed.replicas.kill(doomed)  # the registry still says READY: only the router's retries stand between it and the clients
    assert await load == []
    assert testbed.metric("ebbflow_router_requests_total", model="llm", code="OK") == 240
    assert testbed.metric("ebbflow_router_retries_total", model="llm") >= 1
    assert testbed.metric("ebbflow_router_ejections_total", model="llm", replica=doomed.entry.replica_id) >= 1


async def test_streaming_delivers_every_token_in_order_and_cancel_stops_the_replica(testbed: RouterBed) -> None:
    await testbed.policy("llm_stream")
    replica = await testbed.replicas.start("llm_stream")
    address = await testbed.router()
    await testbed.wait_routable("llm_stream", 1)
    received: queue.Queue = queue.Queue()
    client = triton_grpc.InferenceServerClient(address)
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    try:
        for request_id, count in (("a", 12), ("b", 5)):
            client.async_stream_infer("llm_stream", llm_inputs(PROMPT, count), request_id=request_id)
            tokens = []
            while len(tokens) < count:
                result, error = await asyncio.to_thread(received.get, timeout=10)
                assert error is None, error
                assert result.get_response().id == request_id
                tokens.append(result.as_numpy("text_output").reshape(-1)[0].decode())
            assert tokens == emit_tokens(PROMPT.split(), count)
    finally:
        await asyncio.to_thread(client.stop_stream)  # blocks until the stream ends, and the router runs on this loop
    assert testbed.metric("ebbflow_router_ttft_seconds_count", model="llm_stream") == 2
    assert testbed.metric("ebbflow_router_tpot_seconds_count", model="llm_stream") == 11 + 4
    assert testbed.metric("ebbflow_router_requests_total", model="llm_stream", code="OK") == 2

    # A long generation, cancelled after a few tokens: the replica stops generating.
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    client.async_stream_infer("llm_stream", llm_inputs(PROMPT, 4000), request_id="long")
    for _ in range(3):
        result, error = await asyncio.to_thread(received.get, timeout=10)
        assert error is None, error
    await asyncio.to_thread(client.stop_stream, cancel_requests=True)
    await asyncio.to_thread(client.close)

    async def replica_metric(name: str) -> float:
        async with aiohttp.ClientSession() as session, session.get(replica.metrics_url) as response:
            text = await response.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    await wait_for_async(lambda: replica_metric("ebbflow_emulated_cancelled_requests_total"), 1.0, 10, "the replica to see the cancel")
    await wait_for(lambda: testbed.metric("ebbflow_router_upstream_in_flight", model="llm_stream", replica=replica.entry.replica_id) == 0, 5, "stream settled")


def raw_infer(channel: grpc.aio.Channel) -> Callable[[bytes], Awaitable[grpc.StatusCode]]:
    """ModelInfer with raw bytes as the body; answers the status code instead of raising."""
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

    async def call(data: bytes) -> grpc.StatusCode:
        try:
            await infer(data, timeout=5)
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            return error.code()

    return call


async def random_body_statuses(call: Callable[[bytes], Awaitable[grpc.StatusCode]], examples: int) -> set[grpc.StatusCode]:
    """The status codes `examples` hypothesis-drawn random bodies get (hypothesis runs in a thread, the calls on this loop)."""
    loop = asyncio.get_running_loop()
    statuses: set[grpc.StatusCode] = set()

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=512))
    def random_bytes(data: bytes) -> None:
        statuses.add(asyncio.run_coroutine_threadsafe(call(data), loop).result(timeout=10))

    await asyncio.to_thread(random_bytes)
    return statuses


async def wait_for_async(read, at_least: float, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while await read() < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_admin_and_replica_local_calls_are_refused_with_a_reason(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    await testbed.replicas.start("llm")
    address = await testbed.router()
    client = triton_aio.InferenceServerClient(address)
    try:
        with pytest.raises(InferenceServerException) as unload:
            await client.unload_model("llm")
        assert unload.value.status() == "StatusCode.PERMISSION_DENIED" and "control plane" in unload.value.message()
        with pytest.raises(InferenceServerException) as shm:
            await client.register_system_shared_memory("r", "/r", 64)
        assert shm.value.status() == "StatusCode.UNIMPLEMENTED"
        assert await client.is_server_ready()
        stats = await client.get_inference_statistics("llm", as_json=True)
        assert stats["model_stats"][0]["name"] == "llm"
    finally:
        await client.close()


async def test_drains_are_acknowledged_once_seen_and_again_when_idle(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    replica = await testbed.replicas.start("llm")
    address = await testbed.router()
    await testbed.wait_routable("llm", 1)
    acks: list[registry_pb2.DrainAck] = []

    async def on_ack(message) -> None:  # type: ignore[no-untyped-def]
        acks.append(registry_pb2.DrainAck.FromString(message.data))

    subscription = await testbed.bus.nc.subscribe(subjects.drain_ack_subject("llm", replica.entry.replica_id), cb=on_ack)
    client = triton_aio.InferenceServerClient(address)
    try:
        running = [asyncio.create_task(client.infer("llm", llm_inputs(PROMPT, 400))) for _ in range(2)]
        await wait_for(lambda: testbed.metric("ebbflow_router_upstream_in_flight", model="llm", replica=replica.entry.replica_id) == 2, 5, "two in flight")
        await testbed.replicas.set_state(replica, registry_pb2.REPLICA_STATE_DRAINING)
        await wait_for(lambda: len(acks) >= 1, 5, "the first drain ack")
        assert acks[0].in_flight == 2
        await asyncio.gather(*running)  # in-flight work on a draining replica completes
        await wait_for(lambda: len(acks) >= 2, 5, "the idle drain ack")
        assert acks[-1].in_flight == 0
    finally:
        await subscription.unsubscribe()
        await client.close()


async def test_spans_continue_the_clients_trace(testbed: RouterBed) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await testbed.policy("llm")
    await testbed.replicas.start("llm")
    address = await testbed.router(tracing=True)
    testbed.routers[-1].router.tracer = provider.get_tracer("test")
    await testbed.wait_routable("llm", 1)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client = triton_aio.InferenceServerClient(address)
    try:
        await client.infer("llm", llm_inputs(PROMPT, 3), headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    finally:
        await client.close()
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.attributes["ebbflow.model"] == "llm" and span.attributes["ebbflow.attempts"] == 1


@pytest.mark.timeout(240)
async def test_garbage_and_oversized_input_never_hurt_the_router(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    await testbed.replicas.start("llm")
    address = await testbed.router(max_message_bytes=1024 * 1024)
    await testbed.wait_routable("llm", 1)
    channel = grpc.aio.insecure_channel(address)
    call = raw_infer(channel)
    statuses = await random_body_statuses(call, examples=150)
    assert statuses <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, statuses

    valid = triton_grpc.service_pb2.ModelInferRequest(model_name="llm", id="x")
    truncated = valid.SerializeToString()[:-1]
    assert await call(truncated) == grpc.StatusCode.INVALID_ARGUMENT
    oversized = triton_grpc.service_pb2.ModelInferRequest(model_name="llm", raw_input_contents=[b"x" * (2 * 1024 * 1024)])
    assert await call(oversized.SerializeToString()) == grpc.StatusCode.RESOURCE_EXHAUSTED

    stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")(timeout=10)
    await stream.write(b"\xff\xff\xff")
    await stream.done_writing()
    replies = [triton_grpc.service_pb2.ModelStreamInferResponse.FromString(r) async for r in stream]
    assert len(replies) == 1 and "malformed request" in replies[0].error_message
    await channel.close()

    assert await closed_loop(address, clients=2, requests_each=3) == []  # still serving
