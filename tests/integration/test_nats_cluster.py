"""`ebbflow up --nats-cluster 3`'s NATS: three real nats-servers on loopback as one JetStream cluster, every bucket
and stream kept on all three, and the loss of any one node survived: writes and reads go on, nothing written is
lost, and the node comes back on its port and store and catches up."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from ebbflow.runtime import subjects
from ebbflow.runtime.bus import connect
from ebbflow.runtime.nats_server import NatsCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_three_node_cluster_replicates_and_survives_losing_a_node(tmp_path: Path):
    cluster = NatsCluster(tmp_path, 3)
    stop = asyncio.Event()
    url = await cluster.start()
    supervising = asyncio.create_task(cluster.run(stop))
    bus = None
    try:
        assert url.count("nats://") == 3
        bus = await connect(url, "cluster-test")
        assert bus.copies == 3
        status = await bus.js.stream_info(f"KV_{subjects.DESIRED_BUCKET}")
        assert status.config.num_replicas == 3
        decisions = await bus.js.stream_info(subjects.DECISIONS_STREAM)
        assert decisions.config.num_replicas == 3
        for n in range(20):
            await bus.policies.put(f"before{n}", b"x")

        # Lose one node, the one this client is connected to if possible: reads and writes go on.
        connected = bus.nc.connected_url.port if bus.nc.connected_url else None
        victim = next((node for node in cluster.nodes if node.port == connected), cluster.nodes[0])
        assert victim.child is not None
        victim.child.process.send_signal(signal.SIGKILL)
        started = time.monotonic()
        written = 0
        deadline = time.monotonic() + 30
        while written < 20:
            try:
                await bus.policies.put(f"after{written}", b"y")
                written += 1
            except Exception:  # the moment of the loss: the client moves to another node, the stream to a new leader
                assert time.monotonic() < deadline, "writes did not resume within 30 s of losing one node"
                await asyncio.sleep(0.2)
        resumed_s = time.monotonic() - started
        while True:  # each stream elects its leader on its own: DECISIONS may still be electing (the services' Landing retries so)
            try:
                await bus.js.publish(subjects.decision_subject("m"), b"d", headers={"Nats-Msg-Id": "m:1"})
                break
            except Exception:
                assert time.monotonic() < deadline, "the DECISIONS stream took no write within 30 s of losing one node"
                await asyncio.sleep(0.2)
        while True:  # listing keys makes a consumer, which also waits for the stream's new leader to settle
            try:
                keys = set(await bus.policies.keys())
                break
            except Exception:
                assert time.monotonic() < deadline, "the policies bucket could not be listed within 30 s of losing one node"
                await asyncio.sleep(0.2)
        assert {f"before{n}" for n in range(20)} | {f"after{n}" for n in range(20)} <= keys, "nothing written is lost"
        print(f"\nwrites resumed {resumed_s:.2f} s after SIGKILL of {victim.name}")

        # The node comes back on its port and store, and the cluster is whole again.
        deadline = time.monotonic() + 30
        while victim.restarts < 1:
            assert time.monotonic() < deadline, "the killed node was not started again"
            await asyncio.sleep(0.2)
        assert victim.child is not None and victim.child.running
        info = await bus.js.stream_info(f"KV_{subjects.POLICIES_BUCKET}")
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # the leader plus two followers
    finally:
        if bus is not None:
            await bus.close()
        stop.set()
        await asyncio.gather(supervising, return_exceptions=True)
        await cluster.stop()
    assert all(node.child is None or not node.child.running for node in cluster.nodes)
