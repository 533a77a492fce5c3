"""A fixed set of `tritonserver` replicas, registered as the actuator would, with no scaling.

For benchmarks and router tests that need exact control: how many replicas,
how fast each is (the emulator's speed factor), and when one becomes ready,
drains or dies. It writes the same registry entries as the local actuator.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.process import ChildProcess, spawn
from ebbflow.runtime.wire import address
from ebbflow.runtime.triton import (
    default_model_repository,
    find_triton,
    model_ready,
    new_replica_entry,
    prepare_backend_dir,
    publish_model_configs,
    remove_shm_regions,
    replica_launch,
    shm_prefix,
)
from ebbflow.v1 import registry_pb2


@dataclass
class StaticReplica:
    entry: registry_pb2.ReplicaEntry
    child: ChildProcess

    @property
    def key(self) -> str:
        return subjects.replica_key(self.entry.model, self.entry.replica_id)

    @property
    def address(self) -> str:
        return address(self.entry)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.entry.host}:{self.entry.metrics_port}/metrics"


class StaticReplicas:
    def __init__(self, bus: Bus, state_dir: Path, time_scale: float, repository: Path | None = None) -> None:
        self.bus = bus
        self.state_dir = state_dir
        self.time_scale = time_scale
        self.repository = repository or default_model_repository()
        self.install = find_triton()
        self.backend_dir = prepare_backend_dir(self.install, state_dir)
        self.replicas: list[StaticReplica] = []

    async def publish_model_configs(self) -> None:
        await publish_model_configs(self.bus.models, self.repository)

    async def start(self, model: str, speed_factor: float = 1.0, register: bool = True, ready_timeout_s: float = 60.0) -> StaticReplica:
        """Start one replica, wait until Triton says the model is ready, and (by default) register it READY."""
        entry = new_replica_entry(model, speed_factor=speed_factor)
        replica = StaticReplica(entry, await self._launch(entry, ready_timeout_s))
        self.replicas.append(replica)
        if register:
            await self.set_state(replica, registry_pb2.REPLICA_STATE_READY)
        return replica

    async def restart(self, replica: StaticReplica, ready_timeout_s: float = 60.0) -> None:
        """Kill the replica's tritonserver and start a new one on the same ports, registry untouched:
        what a supervisor restarting a crashed server looks like from outside (its counters start from zero)."""
        replica.child.process.send_signal(signal.SIGKILL)
        await self._reap(replica)
        replica.child = await self._launch(replica.entry, ready_timeout_s)

    async def _launch(self, entry: registry_pb2.ReplicaEntry, ready_timeout_s: float) -> ChildProcess:
        launch = replica_launch(self.install, self.backend_dir, self.repository, entry, 5, self.time_scale)
        name = f"tritonserver {entry.model}.{entry.replica_id}"
        child = await spawn(name, launch.argv, self.state_dir / "logs" / f"triton-{entry.replica_id}.log", launch.env, own_group=True)
        deadline = time.monotonic() + ready_timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while not await model_ready(session, entry):
                if not child.running or time.monotonic() > deadline:
                    why = f"exited with code {child.process.returncode}" if not child.running else f"not ready after {ready_timeout_s:.0f} s"
                    await child.stop(5.0)
                    child.kill_group()
                    remove_shm_regions(shm_prefix(entry.replica_id))
                    raise UnavailableError(f"{name} {why}:\n{child.tail()}")
                await asyncio.sleep(0.1)
        entry.pid = child.pid
        entry.ready_at_unix_s = time.time()
        return child

    async def set_state(self, replica: StaticReplica, state: int) -> None:
        replica.entry.state = state  # type: ignore[assignment]
        await self.bus.replicas.put(replica.key, replica.entry.SerializeToString())

    def kill(self, replica: StaticReplica) -> None:
        """SIGKILL without touching the registry: what a crash looks like to the router."""
        replica.child.process.send_signal(signal.SIGKILL)

    async def _reap(self, replica: StaticReplica) -> None:
        """Stop the replica's server, then whatever of its process group and shared memory outlived it: a SIGKILLed
        tritonserver leaves its Python-backend stubs running with their /dev/shm regions (make test left some)."""
        await replica.child.stop(5.0)
        replica.child.kill_group()
        remove_shm_regions(shm_prefix(replica.entry.replica_id))

    async def stop(self) -> None:
        for replica in self.replicas:
            try:
                await self.bus.replicas.delete(replica.key)
            except Exception:  # NATS may already be gone at teardown
                pass
        await asyncio.gather(*(self._reap(r) for r in self.replicas), return_exceptions=True)
        self.replicas.clear()
