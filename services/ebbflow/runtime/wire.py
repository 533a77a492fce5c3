"""What the services agree on over NATS, defined once (docs/architecture.md "Replica registry" and
"Load vocabulary"): the registry's replica states and their names, a replica's address, the latency
histogram every router fills and the collector merges, and how recent router telemetry must be.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ebbflow.v1 import registry_pb2

READY = registry_pb2.REPLICA_STATE_READY
STARTING = registry_pb2.REPLICA_STATE_STARTING
DRAINING = registry_pb2.REPLICA_STATE_DRAINING
FAILED = registry_pb2.REPLICA_STATE_FAILED


def state_name(state: int) -> str:
    """A registry state as operators read it: 'ready', 'starting', 'draining', ..."""
    return registry_pb2.ReplicaState.Name(state).removeprefix("REPLICA_STATE_").lower()


def address(entry: registry_pb2.ReplicaEntry) -> str:
    """Where a replica serves Triton's gRPC protocol: host:port."""
    return f"{entry.host}:{entry.grpc_port}"


def http_address(entry: registry_pb2.ReplicaEntry) -> str:
    """Where a replica serves Triton's HTTP (KServe v2) protocol: host:port; "" when it has no HTTP port."""
    return f"{entry.host}:{entry.http_port}" if entry.http_port else ""


def ready(entries: Iterable[registry_pb2.ReplicaEntry]) -> list[registry_pb2.ReplicaEntry]:
    """The entries a router may send to: READY only (STARTING is not yet serving, DRAINING no longer takes new work)."""
    return [entry for entry in entries if entry.state == READY]


LATENCY_BUCKETS_S: tuple[float, ...] = tuple(0.001 * 2 ** (i / 4) for i in range(69))
"""Fixed log-spaced latency buckets (seconds) shared by every router so histograms merge by addition:
1 ms to ~131 s, four buckets per doubling. The last count of a histogram is the overflow bucket."""


def histogram_quantile(counts: Sequence[int], quantile: float, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> float:
    """Quantile from bucket counts (upper bound of the bucket holding it); 0 when empty."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = quantile * total
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= rank:
            return bounds[index] if index < len(bounds) else bounds[-1]
    return bounds[-1]


ROUTER_TELEMETRY_FRESH_S = 3.0
"""A router heard from within this long is alive: its telemetry counts and its drain acknowledgements are
awaited. Routers publish every `router.telemetry_interval_s` (1 s by default), so three intervals missed."""
