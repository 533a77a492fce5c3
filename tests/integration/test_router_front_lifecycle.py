"""The HAProxy front's life apart from its shell, with real haproxy, nats-server and tritonserver replicas.

HAProxy is data plane: it keeps serving when the Python process that runs it
dies, a front started later on the same state directory adopts it instead of
starting another, a stop lets the calls in flight finish (HAProxy's soft
stop, bounded by router.drain_timeout_s) and answers held requests before
that bound, and nothing of it is left once it is stopped, even when no shell
is left to stop it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import tritonclient.grpc.aio as triton_aio
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from ebbflow.router.front import HaproxyFront, front_processes, haproxy_binary, read_record, stop_leftover_front
from ebbflow.router.haproxy import parse_stats
from ebbflow.router.telemetry import RouterMetrics
from ebbflow.router.worker import stop_router
from ebbflow.runtime.config import RouterConfig
from ebbflow.runtime.process import ChildProcess, spawn, venv_environment
from tests.conftest import expected_output, llm_inputs, wait_for
from tests.integration.conftest import RouterBed
from tests.integration.test_router import PROMPT, inference_count

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (make test installs it: apt-get install haproxy)"),
]

LONG_TOKENS = 600
"""An llm answer of ~0.4 s at the testbed's time scale: long enough to be in flight when the front stops."""


class SteadyLoad:
    """`clients` Triton clients sending llm requests back to back until stopped; every answer is checked."""

    def __init__(self, address: str, clients: int, max_tokens: int = 8) -> None:
        self.address, self.max_tokens = address, max_tokens
        self.ok = 0
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        client = triton_aio.InferenceServerClient(self.address)
        try:
            while not self._stop.is_set():
                try:
                    result = await client.infer("llm", llm_inputs(PROMPT, self.max_tokens), client_timeout=30)
                    assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, self.max_tokens)
                    self.ok += 1
                except InferenceServerException as error:
                    self.errors.append(f"{error.status()}: {error.message()}")
        finally:
            await client.close()

    async def served(self, more: int, timeout_s: float = 10) -> None:
        """Until `more` further requests have been answered."""
        target = self.ok + more
        await wait_for(lambda: self.ok >= target, timeout_s, f"{more} more answers")

    async def stop(self) -> list[str]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.errors


async def front_in_child(nats_url: str, config: RouterConfig, fallback: str, state_dir: Path) -> ChildProcess:
    """The front in a process of its own (`python -m ebbflow.router.front`), so the test can SIGKILL its shell."""
    ready = state_dir / "front-ready"
    env = venv_environment()
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2] / "services"),
        EBBFLOW_NATS_URL=nats_url,
        EBBFLOW_ROUTER_CONFIG=json.dumps(asdict(config)),
        EBBFLOW_FRONT_FALLBACK=fallback,
        EBBFLOW_STATE_DIR=str(state_dir),
        EBBFLOW_READY_FILE=str(ready),
    )
    child = await spawn("front shell", [sys.executable, "-m", "ebbflow.router.front"], state_dir / "logs" / "front-shell.log", env)
    await wait_for(lambda: ready.exists() or not child.running, 30, "the front's shell to serve")
    assert child.running, child.tail()
    return child


def new_front(testbed: RouterBed, config: RouterConfig, fallback: str, state_dir: Path) -> HaproxyFront:
    """A front in the test's process, stopped by the testbed's clean-up like the others."""
    front = HaproxyFront(config, testbed.bus, testbed.view, fallback, state_dir, RouterMetrics(CollectorRegistry()))
    testbed.fronts.append(front)
    return front


def assert_nothing_left(state_dir: Path, admin_socket: str) -> None:
    assert front_processes(state_dir) == [], "no haproxy of this state directory is left"
    assert read_record(state_dir) is None, "the pid file is removed"
    assert not Path(admin_socket).exists(), "the admin socket is removed"


async def test_a_front_whose_shell_died_keeps_serving_and_is_adopted_by_the_next(testbed: RouterBed, nats_url: str) -> None:
    await testbed.policy("llm")
    first = await testbed.replicas.start("llm")
    config = RouterConfig(port=0, http_port=0, hold_timeout_s=20.0, drain_timeout_s=5.0)
    fallback = await testbed.router(drain_timeout_s=5.0)  # the Python router, configured as `config` says
    state_dir = testbed.state_dir / "front-adopted"
    shell = await front_in_child(nats_url, config, fallback, state_dir)
    record = read_record(state_dir)
    assert record is not None and record.pid in front_processes(state_dir)
    address = record.listen
    load = SteadyLoad(address, clients=4)
    try:
        await load.served(50)
        # The shell dies as from a crash, and the Python router with it: HAProxy is in a session of its own and
        # keeps forwarding to the replicas of its last configuration.
        shell.process.send_signal(signal.SIGKILL)
        await shell.process.wait()
        await testbed.routers[0].stop(drain=False)
        await load.served(100)
        assert front_processes(state_dir) == [record.pid]
        # What only the Python router answers waits for it (documented: UNAVAILABLE meanwhile).
        lone = triton_aio.InferenceServerClient(address)
        try:
            with pytest.raises(InferenceServerException) as away:
                await lone.get_model_metadata("llm", client_timeout=5)
            assert away.value.status() == "StatusCode.UNAVAILABLE"
        finally:
            await lone.close()
        # The router process starts again, its Python router on the same private port as before.
        assert await testbed.router(port=int(fallback.rpartition(":")[2]), drain_timeout_s=5.0) == fallback

        # A new shell on the same state directory adopts it: same process, same port, nothing reloaded.
        front = new_front(testbed, config, fallback, state_dir)
        started = time.monotonic()
        port = await front.start()
        adoption_s = time.monotonic() - started
        print(f"\nadopted haproxy pid {record.pid} in {adoption_s * 1000:.0f} ms")
        assert (front.adopted_pid, front.pids, front.reloads) == (record.pid, [record.pid], 0)
        assert f"127.0.0.1:{port}" == address
        testbed.tasks.append(asyncio.create_task(front.run(testbed.stop)))
        await load.served(50)

        # From here on it is this shell's HAProxy: a new replica reloads it (-sf names the adopted pid).
        second = await testbed.replicas.start("llm")
        await wait_for(lambda: f"server {second.entry.replica_id} " in front._rendered, 10, "the second replica in the front")
        assert front.reloads == 1 and front.pids[0] != record.pid
        await wait_for(lambda: record.pid not in front_processes(state_dir), 10, "the adopted haproxy to finish and exit")
        before = await inference_count(second.address, "llm")
        await load.served(100)
        assert await inference_count(second.address, "llm") > before, "the reloaded front sends calls to the new replica"
        assert (read_record(state_dir) or record).pid == front.pids[0], "the pid file names the serving haproxy"
    finally:
        errors = await load.stop()
        if shell.running:  # failed before the kill: a live shell would start HAProxy again after the clean-up
            await shell.stop(5.0, signal.SIGKILL)
    assert errors == [], errors[:5]
    assert first.entry.replica_id in front._rendered
    print(f"{load.ok} requests, 0 failed, through the death of the shell and the Python router, the adoption and a reload")
    await front.stop()
    assert_nothing_left(state_dir, record.admin_socket)


async def test_stopping_under_load_finishes_every_call_in_flight(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    replica = await testbed.replicas.start("llm")
    address = await testbed.router(front=True, drain_timeout_s=10.0)
    front, service = testbed.fronts[0], testbed.routers[0]
    await wait_for(lambda: f"server {replica.entry.replica_id} " in front._rendered, 10, "the replica in the front")
    clients = [triton_aio.InferenceServerClient(address) for _ in range(8)]
    try:
        calls = [asyncio.create_task(c.infer("llm", llm_inputs(PROMPT, LONG_TOKENS), client_timeout=30)) for c in clients]

        async def in_flight() -> int:
            stats = parse_stats(await front._admin("show stat"))
            return sum(s.in_flight for (_, server), s in stats.items() if server == replica.entry.replica_id)

        deadline = time.monotonic() + 10
        while await in_flight() < len(calls):
            assert time.monotonic() < deadline, "eight calls in flight at the front"
            await asyncio.sleep(0.02)
        pid = front.pids[0]
        started = time.monotonic()
        await stop_router(front, service, drain=True)
        stop_s = time.monotonic() - started
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()
    failed = [o for o in outcomes if isinstance(o, Exception)]
    print(f"\nsoft stop with {len(calls)} calls in flight took {stop_s:.2f} s; {len(failed)} failed")
    assert failed == [], failed
    assert all(o.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, LONG_TOKENS) for o in outcomes)
    assert stop_s < 10.0, "the drain ended when the calls did, not at the bound"
    assert pid not in front_processes(testbed.state_dir / "front0")
    # Stopped is stopped: a new call is refused at once (no listener), which a client may retry elsewhere.
    late = triton_aio.InferenceServerClient(address)
    try:
        with pytest.raises(InferenceServerException) as refused:
            await late.infer("llm", llm_inputs(PROMPT, 2), client_timeout=5)
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
    finally:
        await late.close()


async def test_a_stopping_router_answers_held_requests_before_its_bound(testbed: RouterBed) -> None:
    await testbed.policy("llm", min_replicas=0)
    address = await testbed.router(front=True, drain_timeout_s=3.0)
    front, service = testbed.fronts[0], testbed.routers[0]
    client = triton_aio.InferenceServerClient(address)
    try:
        held = [asyncio.create_task(client.infer("llm", llm_inputs(PROMPT, 4), client_timeout=30)) for _ in range(3)]
        await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm") == 3, 5, "three requests held behind the front")
        started = time.monotonic()
        await stop_router(front, service, drain=True)
        stop_s = time.monotonic() - started
        outcomes = await asyncio.gather(*held, return_exceptions=True)
    finally:
        await client.close()
    print(f"\nstop with 3 held requests took {stop_s:.2f} s")
    assert stop_s < 3.0 + 1.0, "within the drain bound"
    for outcome in outcomes:
        assert isinstance(outcome, InferenceServerException), outcome
        assert outcome.status() == "StatusCode.UNAVAILABLE" and "retry" in outcome.message(), outcome.message()
    assert testbed.metric("ebbflow_router_rejections_total", model="llm", reason="shutting_down") == 3


async def test_a_replica_ready_during_the_drain_still_serves_the_held_requests(testbed: RouterBed) -> None:
    await testbed.policy("llm", min_replicas=0)
    address = await testbed.router(front=True, drain_timeout_s=10.0)
    front, service = testbed.fronts[0], testbed.routers[0]
    client = triton_aio.InferenceServerClient(address)
    try:
        held = [asyncio.create_task(client.infer("llm", llm_inputs(PROMPT, n), client_timeout=30)) for n in (4, 5)]
        await wait_for(lambda: testbed.metric("ebbflow_router_held", model="llm") == 2, 5, "two requests held behind the front")
        stopping = asyncio.create_task(stop_router(front, service, drain=True))
        await testbed.replicas.start("llm")  # the Python router still follows the registry while it drains
        results = await asyncio.gather(*held)
        await stopping
    finally:
        await client.close()
    assert [r.as_numpy("text_output").reshape(-1)[0].decode() for r in results] == [expected_output(PROMPT, n) for n in (4, 5)]


async def test_a_released_front_serves_on_and_its_leftovers_are_stopped_from_the_state_dir(testbed: RouterBed) -> None:
    await testbed.policy("llm")
    await testbed.replicas.start("llm")
    address = await testbed.router(front=True)
    front = testbed.fronts[0]
    (pid,) = front.pids
    front.release()  # what a shell leaves on purpose; the next one on this state directory would adopt it
    client = triton_aio.InferenceServerClient(address)
    try:
        result = await client.infer("llm", llm_inputs(PROMPT, 3))
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, 3)
    finally:
        await client.close()
    record = read_record(testbed.state_dir / "front0")
    assert record is not None and record.pid == pid
    await front.stop()  # released: not this shell's to stop any more
    assert os.path.exists(f"/proc/{pid}")

    # `ebbflow down` with no router left: the state directory is all it has.
    assert stop_leftover_front(testbed.state_dir / "front0", drain_timeout_s=5.0) == [pid]
    assert_nothing_left(testbed.state_dir / "front0", record.admin_socket)
    late = triton_aio.InferenceServerClient(address)
    try:
        with pytest.raises(InferenceServerException):
            await late.infer("llm", llm_inputs(PROMPT, 2), client_timeout=5)
    finally:
        await late.close()


async def test_a_front_that_cannot_be_adopted_is_replaced_on_the_same_port(testbed: RouterBed) -> None:
    """A recorded front that no longer answers (hung, or its socket gone) is not trusted: it is stopped and a new
    HAProxy serves the configured port."""
    await testbed.policy("llm")
    await testbed.replicas.start("llm")
    fallback = await testbed.router()
    config = RouterConfig(port=0, http_port=0, hold_timeout_s=20.0, drain_timeout_s=2.0)
    state_dir = testbed.state_dir / "front-replaced"
    first = new_front(testbed, config, fallback, state_dir)
    port = await first.start()
    (old,) = first.pids
    first.release()
    record = read_record(state_dir)
    assert record is not None
    Path(record.admin_socket).unlink()  # it can no longer be asked who it is
    second = new_front(testbed, replace(config, port=port), fallback, state_dir)
    assert await second.start() == port
    assert second.adopted_pid is None and second.pids[0] != old
    await wait_for(lambda: old not in front_processes(state_dir), 10, "the unadoptable haproxy to be stopped")
    client = triton_aio.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        result = await client.infer("llm", llm_inputs(PROMPT, 3))
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(PROMPT, 3)
    finally:
        await client.close()
    await second.stop()
    assert_nothing_left(state_dir, str(second.spec.admin_socket))
