"""The collector with real parts: nats-server, tritonserver replicas, the router, unchanged Triton clients.

Load goes through the real router; the collector scrapes the real replicas'
/metrics; its API is called over gRPC.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from dataclasses import replace

import grpc
import pytest
import tritonclient.grpc.aio as triton_aio

from ebbflow.v1 import collector_pb2, collector_pb2_grpc, load_pb2
from tests.conftest import wait_for
from tests.integration.conftest import CONFIG, RouterBed, open_loop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FRESH, STALE = load_pb2.DATA_STATUS_FRESH, load_pb2.DATA_STATUS_STALE


async def snapshots_during(stub: collector_pb2_grpc.CollectorServiceStub, work) -> list[load_pb2.LoadSnapshot]:  # type: ignore[no-untyped-def]
    """Every llm snapshot WatchSnapshots delivers while `work` runs."""
    seen: list[load_pb2.LoadSnapshot] = []

    async def watch() -> None:
        async for message in stub.WatchSnapshots(collector_pb2.WatchSnapshotsRequest(models=["llm"])):
            seen.extend(message.snapshots)

    watcher = asyncio.create_task(watch())
    try:
        await work
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return seen


async def test_arrivals_through_the_router_show_up_within_ten_percent(testbed: RouterBed, collectors) -> None:  # type: ignore[no-untyped-def]
    await testbed.replicas.start("llm")
    await testbed.policy("llm")
    address = await testbed.router()
    await testbed.wait_routable("llm", 1)
    collector, stub = await collectors()

    sender = asyncio.create_task(open_loop(address, rate_rps=40.0, duration_s=9.0))
    await asyncio.sleep(7.0)  # the 4 s window lies inside the send
    snapshot = (await stub.GetSnapshot(collector_pb2.GetSnapshotRequest(model="llm"))).snapshots[0]
    sent_rate, errors = await sender
    assert errors == []
    window = snapshot.windows[0]
    assert window.window_s == 4.0 and window.fresh_intervals == window.intervals >= 7
    assert window.arrival_rps == pytest.approx(sent_rate, rel=0.10)
    # Triton's side agrees: the replica completed what was sent.
    assert window.replicas[0].request_rps == pytest.approx(sent_rate, rel=0.10)
    assert window.replicas[0].status == FRESH and window.replicas[0].in_system > 0
    assert snapshot.status == FRESH and snapshot.latency_p50_s > 0
    assert snapshot.prompt_tokens_per_s > 0 and snapshot.generated_tokens_per_s > 0

    # The same demand is in the history, and on /metrics for the dashboards.
    history = await stub.GetHistory(collector_pb2.GetHistoryRequest(model="llm", start_unix_s=time.time() - 30, step_s=2.0))
    arrivals = dict((s.name, list(s.values)) for s in history.series)["arrival_rps"]
    busy = [v for v in arrivals if not math.isnan(v) and v > 0]
    assert busy and max(busy) == pytest.approx(sent_rate, rel=0.25)
    assert collector.registry.get_sample_value("ebbflow_model_window_arrival_rps", {"model": "llm", "window": "4s"}) > 0
    assert collector.registry.get_sample_value("ebbflow_replica_metrics_fresh", {"model": "llm", "replica": window.replicas[0].replica_id}) == 1

    # Clear errors for what cannot be answered.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetSnapshot(collector_pb2.GetSnapshotRequest(model="nope"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND and "known models" in refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetHistory(collector_pb2.GetHistoryRequest(model="llm", start_unix_s=100.0, end_unix_s=50.0))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetHistory(collector_pb2.GetHistoryRequest(model="llm", start_unix_s=1.0, end_unix_s=1e6, step_s=1.0))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most" in refused.value.details()


async def test_reload_and_restart_on_the_same_port_give_no_negative_or_spiked_rate(testbed: RouterBed, collectors) -> None:  # type: ignore[no-untyped-def]
    replica = await testbed.replicas.start("llm")
    await testbed.policy("llm")
    address = await testbed.router()
    await testbed.wait_routable("llm", 1)
    collector, stub = await collectors()
    rate, duration_s = 30.0, 14.0
    sent = 0.0

    async def disturb() -> None:
        nonlocal sent
        sender = asyncio.create_task(open_loop(address, rate_rps=rate, duration_s=duration_s))
        await asyncio.sleep(4.0)
        # Vertical scaling's move: reload through the repository API with a new instance count.
        admin = triton_aio.InferenceServerClient(replica.address)
        config = (await admin.get_model_config("llm", as_json=True))["config"]
        config["instance_group"] = [{"count": 2, "kind": "KIND_CPU"}]
        await admin.load_model("llm", config=json.dumps(config))
        await admin.close()
        await asyncio.sleep(3.0)
        await testbed.replicas.restart(replica)  # same ports, counters from zero
        sent_rate, errors = await sender
        sent = sent_rate * duration_s
        assert errors == []  # the router resends to the replica once it is back on its address

    seen = await snapshots_during(stub, disturb())
    assert len(seen) >= 20
    for snapshot in seen:
        for load in [*snapshot.replicas, *(r for w in snapshot.windows for r in w.replicas)]:
            for name in ("inference_rps", "request_rps", "in_system", "queued", "prompt_tokens_per_s"):
                value = getattr(load, name)
                assert 0 <= value, (name, value)
    # Requests held through the restart complete in a burst, so one interval may exceed the send rate. What a
    # misread counter adds is history counted twice, which would make the completions the scrapes account for
    # exceed what was sent. A snapshot repeats its replica's last interval until the next scrape lands (under
    # load, scrapes lag), so each scrape's interval is counted once: by when it was taken (snapshot time - age).
    intervals: dict[tuple[str, float], load_pb2.ReplicaLoad] = {}
    for snapshot in seen:
        for load in snapshot.replicas:
            taken = snapshot.time_unix_s - load.age_s
            if load.age_s >= 0 and not any(key[0] == load.replica_id and abs(key[1] - taken) < 0.05 for key in intervals):
                intervals[(load.replica_id, taken)] = load
    bound = 1.1 * sent + 5
    interval_s = seen[0].window_s
    completed = sum(load.request_rps * interval_s for load in intervals.values())
    assert completed <= bound, (completed, sent)
    assert sum(load.inference_rps * interval_s for load in intervals.values()) <= bound
    for snapshot in seen:
        for window in snapshot.windows:  # a window's rate is its counters' change over the intervals it holds
            covered_s = window.intervals * snapshot.window_s
            assert sum(r.request_rps for r in window.replicas) * covered_s <= bound, (window, sent)
    assert any(r.counter_resets for s in seen for r in s.replicas), "the restart was never seen as a counter reset"


async def test_a_replica_that_stops_answering_is_stale_with_its_last_values(testbed: RouterBed, collectors) -> None:  # type: ignore[no-untyped-def]
    replica = await testbed.replicas.start("llm")
    await testbed.policy("llm")
    address = await testbed.router()
    await testbed.wait_routable("llm", 1)
    collector, stub = await collectors()
    sent_rate, errors = await open_loop(address, rate_rps=30.0, duration_s=3.0)
    assert errors == []
    await asyncio.sleep(CONFIG.interval_s * 2)  # the scrape after the last completion
    before = (await stub.GetSnapshot(collector_pb2.GetSnapshotRequest(model="llm"))).snapshots[0].windows[-1].replicas[0]
    assert before.status == FRESH and before.request_rps > 0

    os.kill(replica.child.pid, signal.SIGSTOP)  # still listening, never answering
    try:
        def stale() -> bool:
            snapshot = collector.collector.latest["llm"]
            return snapshot.replicas[0].status == STALE and snapshot.replicas[0].age_s > CONFIG.stale_after_s

        await wait_for(stale, 10, "the replica to go stale")
        during = collector.collector.latest["llm"]
        assert during.stale_replicas == 1 and "ago" in during.replicas[0].status_reason
        assert during.windows[-1].replicas[0].request_rps == pytest.approx(before.request_rps, rel=0.05)  # last values, not zero
        assert collector.registry.get_sample_value("ebbflow_replica_metrics_fresh", {"model": "llm", "replica": replica.entry.replica_id}) == 0
    finally:
        os.kill(replica.child.pid, signal.SIGCONT)
    await wait_for(lambda: collector.collector.latest["llm"].replicas[0].status == FRESH, 10, "the replica to be fresh again")


async def test_history_survives_a_collector_restart(testbed: RouterBed, collectors) -> None:  # type: ignore[no-untyped-def]
    await testbed.replicas.start("llm")
    await testbed.policy("llm")
    address = await testbed.router()
    await testbed.wait_routable("llm", 1)
    first, stub = await collectors()
    started = time.time()
    _, errors = await open_loop(address, rate_rps=20.0, duration_s=4.0)
    assert errors == []
    await asyncio.sleep(1.0)
    await first.close()  # flushes what is pending
    ended = time.time()
    request = collector_pb2.GetHistoryRequest(model="llm", start_unix_s=started - 2, end_unix_s=ended, step_s=1.0)
    before = first.collector.history["llm"].query(request.start_unix_s, request.end_unix_s, request.step_s)[1]

    second, stub = await collectors(replace(CONFIG))
    after = {s.name: list(s.values) for s in (await stub.GetHistory(request)).series}
    known = [i for i, v in enumerate(before["arrival_rps"]) if not math.isnan(v)]
    assert sum(1 for i in known if before["arrival_rps"][i] > 0) >= 3
    for name in ("arrival_rps", "in_flight", "inference_rps", "latency_p99_s", "fresh"):
        assert [after[name][i] for i in known] == pytest.approx([before[name][i] for i in known], nan_ok=True), name
