"""The HAProxy front (router.front = haproxy) with real parts: haproxy, nats-server, tritonserver replicas.

The front forwards ModelInfer of models with ready replicas itself and hands
everything else to the Python router behind it. These tests check both
halves: that fast-path calls never reach the Python router (its upstream
counter stays at zero), and that what only the Python router can do (hold at
zero, answer metadata, refuse, stream, reject bad input) still works through
the front.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal

import grpc
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from ebbflow.emulator.tokens import emit_tokens
from ebbflow.router.front import haproxy_binary
from ebbflow.router.haproxy import parse_stats
from ebbflow.runtime import subjects
from ebbflow.v1 import load_pb2, registry_pb2
from tests.conftest import expected_output, llm_inputs, wait_for
from tests.integration.conftest import RouterBed
from tests.integration.test_router import PROMPT, closed_loop, inference_count, random_body_statuses, raw_infer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (make test installs it: apt-get install haproxy)"),
]


async def wait_in_front(testbed: RouterBed, *replicas) -> None:  # type: ignore[no-untyped-def]
    """Until the front's configuration routes to each of `replicas`."""
    ids = [r.entry.replica_id for r in replicas]
    await wait_for(lambda: all(f"server {i} " in testbed.fronts[0]._rendered for i in ids), 10, f"replicas {ids} in the front")


def python_router_calls(testbed: RouterBed, model: str) -> float:
    """Calls the Python router sent to replicas of `model`, over all codes and replicas."""
    registry = testbed.registries[-1]
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "ebbflow_router_upstream_requests"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("model") == model
    )


async def test_the_front_balances_as_the_policy_says_without_the_python_router(testbed: RouterBed) -> None:
    fast = await testbed.replicas.start("llm", speed_factor=1.0)
    slow = await testbed.replicas.start("llm", speed_factor=0.25)
    await testbed.policy("llm", routing="round_robin")
    address = await testbed.router(front=True)
    shares = {}
    for routing in ("round_robin", "least_outstanding"):
        await testbed.policy("llm", routing=routing)
        await wait_for(lambda: f"balance {'roundrobin' if routing == 'round_robin' else 'leastconn'}" in testbed.fronts[0]._rendered, 5, routing)
        before = {r.key: await inference_count(r.address, "llm") for r in (fast, slow)}
        assert await closed_loop(address, clients=6, requests_each=15) == []
        served = {r.key: await inference_count(r.address, "llm") - before[r.key] for r in (fast, slow)}
        assert sum(served.values()) == 90
        shares[routing] = served[slow.key] / 90
    assert 0.4 <= shares["round_robin"] <= 0.6, shares
    assert shares["least_outstanding"] < 0.35, shares
    assert python_router_calls(testbed, "llm") == 0, "fast-path calls must not cross the Python router"


async def test_at_zero_the_front_hands_requests_to_the_router_that_holds_them(testbed: RouterBed) -> None:
    await testbed.policy("llm", min_replicas=0)
    address = await testbed.router(front=True)
    client = triton_aio.InferenceServerClient(address)
    try:
        metadata = await client.get_model_metadata("llm", as_json=True)
        assert [i["name"] for i in metadata["inputs"]] == ["text_input", "max_tokens", "stream"]
        assert await client.is_model_ready("llm")
        held = [asyncio.create_task(client.infer("llm", llm_inputs(PROMPT, n))) for n in (5, 6, 7)]
        await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm") == 3, 5, "three requests held by the Python router")
        replica = await testbed.replicas.start("llm")
        results = await asyncio.gather(*held)
        assert [r.as_numpy("text_output").reshape(-1)[0].decode() for r in results] == [expected_output(PROMPT, n) for n in (5, 6, 7)]
        assert python_router_calls(testbed, "llm") == 3
        # Once the front has the replica, new calls go straight to it.
        await wait_in_front(testbed, replica)
        assert await closed_loop(address, clients=2, requests_each=5) == []
        assert python_router_calls(testbed, "llm") == 3
    finally:
        await client.close()


async def test_a_replica_killed_mid_load_costs_clients_nothing_through_the_front(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    doomed = await testbed.replicas.start("llm")
    other = await testbed.replicas.start("llm")
    address = await testbed.router(front=True)
    await wait_in_front(testbed, doomed, other)
    load = asyncio.create_task(closed_loop(address, clients=6, requests_each=40))
    await asyncio.sleep(0.5)
    testbed.replicas.kill(doomed)  # the registry still says READY: the front's resends stand between it and the clients
    assert await load == []
    stats = parse_stats(await testbed.fronts[0]._admin("show stat"))
    (status,) = [s.status for (backend, server), s in stats.items() if server == doomed.entry.replica_id and not backend.endswith("_http")]
    assert status.startswith("DOWN"), "the dead replica is ejected"


async def test_the_front_publishes_telemetry_and_acknowledges_drains(testbed: RouterBed) -> None:
    await testbed.policy("llm", slo_latency_s=0.0001)  # no answer meets it: each one counts as slow
    replica = await testbed.replicas.start("llm")
    address = await testbed.router(front=True)
    front = testbed.fronts[0]
    await wait_in_front(testbed, replica)
    arrivals: list[int] = []
    acks: list[registry_pb2.DrainAck] = []

    async def on_telemetry(message) -> None:  # type: ignore[no-untyped-def]
        telemetry = load_pb2.RouterTelemetry.FromString(message.data)
        if telemetry.router_id == front.router_id:
            arrivals.extend(m.arrivals for m in telemetry.models if m.model == "llm")

    async def on_ack(message) -> None:  # type: ignore[no-untyped-def]
        ack = registry_pb2.DrainAck.FromString(message.data)
        if ack.router_id == front.router_id:  # the Python router behind it acknowledges too (with nothing in flight)
            acks.append(ack)

    telemetry_sub = await testbed.bus.nc.subscribe(subjects.ROUTER_TELEMETRY, cb=on_telemetry)
    ack_sub = await testbed.bus.nc.subscribe(subjects.drain_ack_subject("llm", replica.entry.replica_id), cb=on_ack)
    client = triton_aio.InferenceServerClient(address)
    try:
        assert await closed_loop(address, clients=2, requests_each=10) == []
        await wait_for(lambda: sum(arrivals) == 20, 5, "20 arrivals in the front's telemetry")
        # The front counts answers against the policy's latency objective as the Python router does.
        await wait_for(lambda: testbed.metric("ebbflow_router_slow_requests_total", model="llm") == 20, 5, "20 slow answers")
        running = [asyncio.create_task(client.infer("llm", llm_inputs(PROMPT, 3000))) for _ in range(2)]
        await wait_for(lambda: front._meters["llm"].in_flight == 2, 5, "two calls in flight through the front")
        await testbed.replicas.set_state(replica, registry_pb2.REPLICA_STATE_DRAINING)
        await wait_for(lambda: len(acks) >= 1, 5, "the front's first drain ack")
        assert acks[0].in_flight >= 1, "the replaced haproxy still holds the draining replica's calls"
        results = await asyncio.gather(*running)  # in-flight work on a draining replica completes
        assert all(r.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, 3000) for r in results)
        await wait_for(lambda: acks[-1].in_flight == 0, 10, "the idle drain ack")
        assert front.reloads >= 1
    finally:
        await telemetry_sub.unsubscribe()
        await ack_sub.unsubscribe()
        await client.close()


async def test_everything_else_crosses_the_front_unchanged(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    await testbed.policy("llm_stream")
    llm = await testbed.replicas.start("llm")
    stream = await testbed.replicas.start("llm_stream")
    address = await testbed.router(front=True, max_message_bytes=1024 * 1024)
    await wait_in_front(testbed, llm, stream)
    client = triton_aio.InferenceServerClient(address)
    try:
        with pytest.raises(InferenceServerException) as unknown:
            await client.infer("nope", llm_inputs(PROMPT, 1))
        assert unknown.value.status() == "StatusCode.NOT_FOUND" and "nope" in unknown.value.message()
        with pytest.raises(InferenceServerException) as unload:
            await client.unload_model("llm")
        assert unload.value.status() == "StatusCode.PERMISSION_DENIED"
        assert await client.is_server_ready()
    finally:
        await client.close()
    channel = grpc.aio.insecure_channel(address)
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    call = raw_infer(channel)
    statuses = await random_body_statuses(call, examples=60)
    assert statuses <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, statuses
    # Unreadable model name: the Python router refuses it. Readable name, broken rest: the fast path hands it to
    # the replica, which answers as Triton does to any client (the documented difference of the front).
    assert await call(b"\x0a\xff\x01garbage") == grpc.StatusCode.INVALID_ARGUMENT
    valid = triton_grpc.service_pb2.ModelInferRequest(model_name="llm", id="x")
    with pytest.raises(grpc.aio.AioRpcError) as truncated:
        await infer(valid.SerializeToString()[:-1], timeout=5)
    assert truncated.value.code() == grpc.StatusCode.INTERNAL and "parse" in (truncated.value.details() or "")
    oversized = triton_grpc.service_pb2.ModelInferRequest(model_name="llm", raw_input_contents=[b"x" * (2 * 1024 * 1024)])
    assert await call(oversized.SerializeToString()) == grpc.StatusCode.RESOURCE_EXHAUSTED
    await channel.close()
    # Far over the limit (100 MB at 1 MiB), through an unchanged Triton client: the front answers it after reading
    # it to the end. Handed to the Python router, HAProxy reset the stream and the client saw CANCELLED.
    big = triton_grpc.InferenceServerClient(address)
    try:
        with pytest.raises(InferenceServerException) as too_large:
            await asyncio.to_thread(big.infer, "llm", llm_inputs("a " * (50 * 1000 * 1000), 1), client_timeout=120)
        assert too_large.value.status() == "StatusCode.RESOURCE_EXHAUSTED", too_large.value
        assert "1048576 bytes, router.max_message_bytes" in too_large.value.message()
        result = await asyncio.to_thread(big.infer, "llm", llm_inputs(PROMPT, 2), client_timeout=60)
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, 2)
    finally:
        await asyncio.to_thread(big.close)

    # Streams go through the Python router, token by token.
    received: queue.Queue = queue.Queue()
    stream_client = triton_grpc.InferenceServerClient(address)
    stream_client.start_stream(callback=lambda result, error: received.put((result, error)))
    try:
        stream_client.async_stream_infer("llm_stream", llm_inputs(PROMPT, 6), request_id="s")
        tokens = []
        while len(tokens) < 6:
            result, error = await asyncio.to_thread(received.get, timeout=10)
            assert error is None, error
            tokens.append(result.as_numpy("text_output").reshape(-1)[0].decode())
        assert tokens == emit_tokens(PROMPT.split(), 6)
    finally:
        await asyncio.to_thread(stream_client.stop_stream)
        await asyncio.to_thread(stream_client.close)
    assert await closed_loop(address, clients=1, requests_each=3) == []  # and it still serves


async def test_a_killed_haproxy_is_started_again_on_the_same_port(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    replica = await testbed.replicas.start("llm")
    address = await testbed.router(front=True)
    await wait_in_front(testbed, replica)
    front = testbed.fronts[0]
    (pid,) = front.pids
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: front.pids and front.pids[0] != pid, 5, "a new haproxy")
    assert await closed_loop(address, clients=2, requests_each=5) == []
    assert python_router_calls(testbed, "llm") == 0
