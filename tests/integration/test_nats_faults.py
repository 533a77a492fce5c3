"""NATS outages under load, with a real nats-server and real tritonservers (issue 18, "NATS faults").

The nats-server is SIGKILLed twice while clients send requests through the
router. The first time `ebbflow up`'s supervisor starts it again on its own.
The second time it stays down while a replica is killed and its replacement
becomes ready, so the READY entry can only reach the registry after the
outage; the test then starts NATS again and checks that the registry, the
router and `ebbflow status` catch up within a bound, that status said NATS
was down meanwhile, and that no request failed.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import grpc
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as triton_aio

from ebbflow.actuator.core import Phase
from ebbflow.policy import ModelPolicy
from ebbflow.runtime.nats_server import NatsSupervisor
from ebbflow.runtime.wire import READY, address
from ebbflow.stack import Stack
from ebbflow.status import status_json, status_table
from ebbflow.v1 import load_pb2, status_pb2, status_pb2_grpc
from tests.conftest import expected_output, llm_inputs, wait_for
from tests.integration.conftest import stack_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MODEL = "llm"
REPLICAS = 2
POLICY = ModelPolicy(
    model=MODEL, min_replicas=1, max_replicas=REPLICAS, target_in_flight_per_replica=0.25, scale_down_delay_s=2.0, forecast_quantile=0, panic_threshold=0
)
"""The load scales it to REPLICAS; a scheduler that read silence as no load would be back at 1 within seconds."""
OUTAGE_S = 9.0
"""The second outage lasts at least this: past the scheduler's stale_after_s (3 s) plus the scale-down delay, with margin."""
CAUGHT_UP_S = 10.0
"""After NATS is back: the bound for the registry, the router and status to show the replacement READY and serving."""


class Load:
    """Closed-loop clients through the router, every answer checked."""

    def __init__(self, router: str, clients: int = 4) -> None:
        self.router = router
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        client = triton_aio.InferenceServerClient(self.router)
        expected = expected_output("alpha beta gamma", 8)
        try:
            while not self._stop.is_set():
                try:
                    result = await client.infer(MODEL, llm_inputs("alpha beta gamma", 8), client_timeout=20.0)
                    text = result.as_numpy("text_output").reshape(-1)[0].decode()
                    if text == expected:
                        self.ok += 1
                    else:
                        self.failures.append(f"wrong answer {text!r}")
                except Exception as error:
                    self.failures.append(str(error))
                await asyncio.sleep(0.02)
        finally:
            await client.close()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@pytest_asyncio.fixture
async def supervised(tmp_path: Path) -> AsyncIterator[tuple[Stack, NatsSupervisor]]:
    """A stack on its own nats-server (the session's shared one must not be killed), run as `ebbflow up` runs it."""
    said: list[str] = []
    nats = NatsSupervisor(tmp_path / "nats", said.append)
    url = await nats.start()
    stack = Stack(stack_config(POLICY), url, tmp_path / "state", nats_server=nats)
    stack.said = said  # type: ignore[attr-defined]
    try:
        await stack.start()
        await stack.wait_serving([MODEL], timeout_s=60)
        yield stack, nats
    finally:
        await stack.stop()
        await nats.stop()


async def status(stack: Stack) -> status_pb2.GetStatusResponse:
    assert stack.addresses is not None
    async with grpc.aio.insecure_channel(stack.addresses.control) as channel:
        return await status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest(), timeout=5)


async def served_by(session: aiohttp.ClientSession, host: str, metrics_port: int) -> float:
    """Successful inferences a replica's Triton has counted (its own /metrics: what the router really sent it)."""
    async with session.get(f"http://{host}:{metrics_port}/metrics") as reply:
        text = await reply.text()
    return sum(float(m.group(1)) for m in re.finditer(r'^nv_inference_request_success\{[^}]*model="llm"[^}]*\} (\S+)$', text, re.M))


async def test_requests_flow_through_nats_deaths_and_a_replica_ready_meanwhile_is_recorded_and_routed(supervised):
    stack, nats = supervised
    assert stack.addresses is not None and stack.bus is not None and stack.actuator is not None
    link, actuator = stack.bus.link, stack.actuator
    load = Load(stack.addresses.router)
    await wait_for(lambda: load.ok >= 20, 20, "requests flowing")
    await wait_for(lambda: len(stack.view.ready(MODEL)) == REPLICAS, 60, f"the load to scale {MODEL} to {REPLICAS} ready replicas")

    # 1. SIGKILL: the supervisor starts it again on the same port and store; every client reconnects.
    supervisor_stop = asyncio.Event()
    supervising = asyncio.create_task(nats.run(supervisor_stop))
    assert nats.child is not None
    nats.child.process.send_signal(signal.SIGKILL)
    await wait_for(lambda: nats.restarts == 1, 20, "the supervisor to restart nats-server")
    await wait_for(lambda: link.connected and link.reconnects == 1, 20, "the stack to reconnect")
    assert any("nats-server killed by SIGKILL; starting it again" in line for line in stack.said)  # type: ignore[attr-defined]
    restart_s = nats.last_restart_s
    reply = await status(stack)
    assert reply.nats.connected and reply.nats.server_restarts == 1 and reply.nats.last_server_exit == "killed by SIGKILL"
    supervisor_stop.set()
    await supervising  # the rest of the outage is the test's to end

    # 2. SIGKILL again and keep it down; meanwhile a replica dies and its replacement becomes ready.
    before = {r.entry.replica_id for r in actuator.replicas.values()}
    assert nats.child is not None
    nats.child.process.send_signal(signal.SIGKILL)
    await wait_for(lambda: not link.connected, 10, "the stack to see NATS gone")
    outage_started = time.monotonic()

    def holds() -> float:
        return stack.sample("ebbflow_scheduler_holds_total", {"model": MODEL}) or 0.0

    holds_before = holds()
    down = await status(stack)
    assert not down.nats.connected and down.nats.server_restarts == 1
    table = status_table(down)
    assert "NATS: disconnected since" in table, table
    await wait_for(lambda: all(m.status != load_pb2.DATA_STATUS_FRESH for m in stack.collector.latest.values()), 10, "load data to go stale")
    down = await status(stack)
    (model,) = status_json(down)["models"]
    assert model["in_flight"] is None and model["arrival_rps"] is None and model["load_status"] == "unknown", model  # not 0
    assert status_json(down)["nats"]["connected"] is False
    assert stack.sample("ebbflow_nats_connected") == 0.0

    (victim,) = [r for r in actuator.replicas.values() if r.phase == Phase.READY][:1]
    assert victim.child is not None
    victim.child.process.send_signal(signal.SIGKILL)

    def replacement_ready() -> bool:
        return any(r.entry.replica_id not in before and r.phase == Phase.READY for r in actuator.replicas.values())

    await wait_for(replacement_ready, 60, "a replacement replica ready while NATS is down")
    (new,) = [r for r in actuator.replicas.values() if r.entry.replica_id not in before]
    assert not link.connected, "NATS came back too early: the replacement was not ready during the outage"
    assert stack.view.replicas.get(new.key) is None or stack.view.replicas[new.key].state != READY  # the view cannot know yet
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))  # the fault's length, not a readiness wait
    assert not link.connected
    held = await status(stack)
    assert held.models[0].desired_replicas == REPLICAS, held.models[0]  # nothing scaled down because data stopped
    assert actuator.desired[MODEL].horizontal.replicas == REPLICAS
    assert holds() > holds_before + 3, "the scheduler should count a hold per tick while NATS is away"
    outage_s = time.monotonic() - outage_started

    # 3. NATS back (the supervisor again): the registry records the replacement READY, the router sends it
    # requests, status counts it, and the dead replica's entry is gone.
    supervisor_stop = asyncio.Event()
    supervising = asyncio.create_task(nats.run(supervisor_stop))
    await wait_for(lambda: nats.restarts == 2, 20, "nats-server started again")
    back = time.monotonic()
    await wait_for(lambda: link.connected, 20, "the stack to reconnect")

    def recorded() -> bool:
        entry = stack.view.replicas.get(new.key)
        return entry is not None and entry.state == READY and victim.key not in stack.view.replicas

    await wait_for(recorded, CAUGHT_UP_S, "the replacement READY in the registry and the dead replica gone")
    recorded_s = time.monotonic() - back
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        served: list[float] = [await served_by(session, new.entry.host, new.entry.metrics_port)]

        async def routed() -> None:
            while served[-1] <= served[0]:
                await asyncio.sleep(0.1)
                served.append(await served_by(session, new.entry.host, new.entry.metrics_port))

        await asyncio.wait_for(routed(), CAUGHT_UP_S)
    routable_s = time.monotonic() - back
    reply = await status(stack)
    (model_status,) = reply.models
    assert (model_status.desired_replicas, model_status.ready_replicas, model_status.starting_replicas) == (REPLICAS, REPLICAS, 0)
    assert reply.nats.connected and reply.nats.reconnects == 2 and reply.nats.pending_writes == 0
    assert stack.sample("ebbflow_nats_connected") == 1.0
    assert address(new.entry) in {address(r) for r in stack.view.ready(MODEL)}

    await asyncio.sleep(1.0)  # a little load on the healed fleet
    await load.stop()
    supervisor_stop.set()
    await supervising
    print(
        f"\nnats restart {restart_s:.2f} s; outage {outage_s:.1f} s; replacement recorded READY {recorded_s:.2f} s and served "
        f"{routable_s:.2f} s after NATS was back; requests ok {load.ok}, failed {len(load.failures)}"
    )
    assert not load.failures, load.failures[:5]
