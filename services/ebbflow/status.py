"""The status view: what `ebbflow status` shows, built from the registry, desired state and load (served by
StatusService), and rendered as a table or JSON.

Load that is not fresh is shown as what it is ("unknown", "stale"; null in
JSON), never as zero: during a NATS outage the routers' telemetry does not
arrive, and "0 in flight" would read as an idle model. The NATS line says
whether the control plane is connected, since when, and how often `ebbflow
up` has restarted its nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable, Mapping

import grpc
from google.protobuf.message import DecodeError

from ebbflow.policy import mode_from_proto
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus, unsubscribe, watch_bucket
from ebbflow.runtime.discovery import list_services, supervisors
from ebbflow.runtime.nats_auth import same_servers
from ebbflow.runtime.registry import RegistryView
from ebbflow.runtime.wire import DRAINING, READY, STARTING, address, state_name
from ebbflow.v1 import discovery_pb2, forecast_pb2, load_pb2, policy_pb2, registry_pb2, scheduling_pb2, status_pb2, status_pb2_grpc

log = logging.getLogger(__name__)


def build_status(
    policies: Mapping[str, policy_pb2.ScalingPolicy],
    desired: Mapping[str, scheduling_pb2.DesiredState],
    replicas: list[registry_pb2.ReplicaEntry],
    loads: Mapping[str, load_pb2.LoadSnapshot],
    model: str = "",
    forecasts: Mapping[str, forecast_pb2.Forecast] | None = None,
    crash_loops: Mapping[str, status_pb2.CrashLoop] | None = None,
) -> list[status_pb2.ModelStatus]:
    names = set(policies) | set(desired) | {r.model for r in replicas}
    result = []
    for name in sorted(names):
        if model and name != model:
            continue
        mine = [r for r in replicas if r.model == name]
        policy = policies.get(name)
        want = desired.get(name)
        load = loads.get(name)
        forecast = (forecasts or {}).get(name)
        pinned = ""
        if policy is not None and policy.pinned:
            until = f" until {policy.pin_until_unix_s:.0f} (unix s)" if policy.pin_until_unix_s else ""
            pinned = f"at {policy.pin_replicas} by {policy.pin_by}: {policy.pin_reason}{until}"
        result.append(
            status_pb2.ModelStatus(
                name=name,
                desired_replicas=want.horizontal.replicas if want else 0,
                ready_replicas=sum(1 for r in mine if r.state == READY),
                starting_replicas=sum(1 for r in mine if r.state == STARTING),
                draining_replicas=sum(1 for r in mine if r.state == DRAINING),
                in_flight=load.in_flight if load else 0.0,
                arrival_rps=load.arrival_rps if load else 0.0,
                generation=want.generation if want else 0,
                last_decision_reason=want.reason if want else "",
                last_decision_unix_s=want.decided_at_unix_s if want else 0.0,
                load_status=load.status if load else load_pb2.DATA_STATUS_UNKNOWN,
                min_replicas=policy.min_replicas if policy else 0,
                max_replicas=policy.max_replicas if policy else 0,
                replicas=sorted(mine, key=lambda r: r.replica_id),
                instances_per_replica=want.vertical.instances_per_replica if want else 0,
                max_batch_size=want.vertical.max_batch_size if want else 0,
                mode=mode_from_proto(policy.mode) if policy else "",
                pinned=pinned,
                forecast=forecast,
                crash_loop=(crash_loops or {}).get(name),
            )
        )
    return result


LOAD_STALE_S = 5.0
"""A load snapshot this old is shown as stale (the collector publishes one per model every second)."""


class LiveStatus:
    """What `ebbflow status` shows beyond the registry, followed from NATS in whichever service answers.

    The collector publishes each model's load every interval, the forecaster its
    forecast every bin and the actuator its crash loops every tick; desired
    state is a KV bucket. Every service process keeps the latest of each, so
    any one of them can answer `GetStatus` and none hands objects to another.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.loads: dict[str, load_pb2.LoadSnapshot] = {}
        self.forecasts: dict[str, forecast_pb2.Forecast] = {}
        self.crash_loops: dict[str, status_pb2.CrashLoop] = {}
        self.desired: dict[str, scheduling_pb2.DesiredState] = {}

    async def run(self, stop: asyncio.Event) -> None:
        subscriptions = [
            await self.bus.nc.subscribe(f"{subjects.LOAD}.*", cb=self._on_load),
            await self.bus.nc.subscribe(f"{subjects.FORECAST}.*", cb=self._on_forecast),
            await self.bus.nc.subscribe(subjects.CRASH_LOOPS, cb=self._on_crash_loops),
        ]
        try:
            await watch_bucket(self.bus.desired, self._on_desired, self._on_desired_deleted, stop=stop, link=self.bus.link)
        finally:
            for subscription in subscriptions:
                await unsubscribe(subscription)

    async def _on_load(self, message: Any) -> None:
        with contextlib.suppress(DecodeError):
            snapshot = load_pb2.LoadSnapshot.FromString(message.data)
            self.loads[snapshot.model] = snapshot

    async def _on_forecast(self, message: Any) -> None:
        with contextlib.suppress(DecodeError):
            forecast = forecast_pb2.Forecast.FromString(message.data)
            self.forecasts[forecast.model] = forecast

    async def _on_crash_loops(self, message: Any) -> None:
        with contextlib.suppress(DecodeError):
            self.crash_loops = dict(status_pb2.CrashLoops.FromString(message.data).models)

    def _on_desired(self, key: str, value: bytes, revision: int) -> None:
        with contextlib.suppress(DecodeError):
            desired = scheduling_pb2.DesiredState.FromString(value)
            desired.generation = revision
            self.desired[key] = desired

    def _on_desired_deleted(self, key: str) -> None:
        self.desired.pop(key, None)

    def current_loads(self) -> dict[str, load_pb2.LoadSnapshot]:
        """The latest snapshots as they stand now: unknown while this process is cut off from NATS (nothing can
        reach it), stale once older than LOAD_STALE_S (a collector that died leaves its last snapshot here, and
        that must not read as current load)."""
        now = time.time()
        loads = {}
        for model, snapshot in self.loads.items():
            if not self.bus.link.connected:
                snapshot = load_pb2.LoadSnapshot(
                    model=model, status=load_pb2.DATA_STATUS_UNKNOWN, time_unix_s=snapshot.time_unix_s, status_reason="NATS is unreachable"
                )
            elif snapshot.status == load_pb2.DATA_STATUS_FRESH and now - snapshot.time_unix_s > LOAD_STALE_S:
                snapshot = load_pb2.LoadSnapshot(
                    model=model, status=load_pb2.DATA_STATUS_STALE, time_unix_s=snapshot.time_unix_s,
                    status_reason=f"no snapshot from a collector for {now - snapshot.time_unix_s:.0f} s",
                )
            loads[model] = snapshot
        return loads


class StatusService(status_pb2_grpc.StatusServiceServicer):
    """GetStatus, answered by any service process from what it follows in NATS (LiveStatus and the registry)."""

    def __init__(
        self,
        view: RegistryView,
        live: LiveStatus,
        answered_by: str,
        nats: Callable[[], status_pb2.NatsStatus] = status_pb2.NatsStatus,
    ) -> None:
        self.view = view
        self.live = live
        self.answered_by = answered_by
        self.nats = nats

    async def GetStatus(self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext) -> status_pb2.GetStatusResponse:
        models = build_status(
            self.view.policies, self.live.desired, list(self.view.replicas.values()), self.live.current_loads(), request.model,
            self.live.forecasts, self.live.crash_loops,
        )
        if request.model and not models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.model}'")
        services: list[discovery_pb2.ServiceInstance] = []
        found: list[discovery_pb2.Supervisor] = []
        nats = self.nats()
        if self.live.bus.link.connected:
            try:
                services = await list_services(self.live.bus)
                found = await supervisors(self.live.bus)
            except Exception as error:  # NATS went away meanwhile: the table says so through the NATS line
                log.debug("listing services failed: %s", error)
        for supervisor in found:
            if supervisor.nats_url and same_servers(supervisor.nats_url, nats.url):  # the nats-server `ebbflow up` runs for us
                nats.supervised = True
                nats.server_restarts = supervisor.nats_restarts
                nats.last_server_exit = supervisor.nats_last_exit
                nats.last_server_exit_unix_s = supervisor.nats_last_exit_unix_s
        router = next((s.router_address for s in services if s.service == "router" and s.router_address), "")
        return status_pb2.GetStatusResponse(
            models=models, router_address=router, nats=nats, services=services,
            supervised=[s for supervisor in found for s in supervisor.services], answered_by=self.answered_by,
        )


# ---- rendering ------------------------------------------------------------------


def load_word(status: "load_pb2.DataStatus.ValueType") -> str:
    return load_pb2.DataStatus.Name(status).removeprefix("DATA_STATUS_").lower()


def _fresh(m: status_pb2.ModelStatus) -> bool:
    return m.load_status == load_pb2.DATA_STATUS_FRESH


def nats_json(nats: status_pb2.NatsStatus) -> dict[str, Any]:
    return {
        "url": nats.url,
        "connected": nats.connected,
        "since_unix_s": nats.since_unix_s,
        "reconnects": nats.reconnects,
        "supervised": nats.supervised,
        "server_restarts": nats.server_restarts,
        "last_server_exit": nats.last_server_exit,
        "last_server_exit_unix_s": nats.last_server_exit_unix_s,
        "pending_writes": nats.pending_writes,
    }


def nats_line(nats: status_pb2.NatsStatus) -> str:
    """E.g. "NATS: disconnected since 14:03:07 (nats://127.0.0.1:4222); load data stale, scaling holds"."""
    if not nats.url:
        return "NATS: unknown"
    since = time.strftime("%H:%M:%S", time.localtime(nats.since_unix_s))
    if nats.connected:
        line = f"NATS: connected ({nats.url})"
        if nats.reconnects:
            line += f", reconnected at {since}"
    else:
        line = f"NATS: disconnected since {since} ({nats.url}); load data stale, scaling holds, the router serves from its last registry"
    if nats.supervised and nats.server_restarts:
        exit_at = time.strftime("%H:%M:%S", time.localtime(nats.last_server_exit_unix_s))
        line += f"; nats-server restarted {nats.server_restarts} time(s), last {nats.last_server_exit or 'died'} at {exit_at}"
    if nats.pending_writes:
        line += f"; {nats.pending_writes} registry write(s) waiting for NATS"
    return line


def status_json(response: status_pb2.GetStatusResponse) -> dict[str, Any]:
    return {
        "router": response.router_address,
        "nats": nats_json(response.nats),
        "answered_by": response.answered_by,
        "services": service_rows(response),
        "models": [
            {
                "name": m.name,
                "desired_replicas": m.desired_replicas,
                "ready_replicas": m.ready_replicas,
                "starting_replicas": m.starting_replicas,
                "draining_replicas": m.draining_replicas,
                "min_replicas": m.min_replicas,
                "max_replicas": m.max_replicas,
                "in_flight": round(m.in_flight, 3) if _fresh(m) else None,
                "arrival_rps": round(m.arrival_rps, 3) if _fresh(m) else None,
                "load_status": load_word(m.load_status),
                "generation": m.generation,
                "instances_per_replica": m.instances_per_replica,
                "max_batch_size": m.max_batch_size,
                "mode": m.mode,
                "pinned": m.pinned,
                "forecast": {
                    "method": m.forecast.method or "none",
                    "step_s": m.forecast.step_s,
                    "p90_peak_rps": round(max(_p90(m.forecast), default=0.0), 3),
                },
                "last_decision_reason": m.last_decision_reason,
                "last_decision_unix_s": m.last_decision_unix_s,
                "crash_loop": _crash_loop_json(m.crash_loop),
                "replicas": [
                    {
                        "id": r.replica_id,
                        "state": state_name(r.state),
                        "address": address(r),
                        "metrics_port": r.metrics_port,
                        "metrics": f"http://{r.host}:{r.metrics_port}/metrics",
                        "instances": r.instances,
                        "pid": r.pid,
                    }
                    for r in m.replicas
                ],
            }
            for m in response.models
        ],
    }


def _crash_loop_json(crash: status_pb2.CrashLoop) -> dict[str, Any] | None:
    """A model's failed replica starts since its back-off last reset (None when there are none)."""
    if not crash.restarts:
        return None
    return {
        "state": crash.state,
        "restarts": crash.restarts,
        "next_try_in_s": round(max(0.0, crash.next_try_unix_s - time.time()), 1) if crash.next_try_unix_s else 0.0,
        "reason": crash.reason,
        "log_tail": list(crash.log_tail),
        "log_path": crash.log_path,
        "last_failure_unix_s": crash.last_failure_unix_s,
    }


STATUS_TAIL_LINES = 5
"""Log lines of a crash-looping model's last failed replica that the status table shows (--json has them all)."""


def _crash_loop_lines(crash: status_pb2.CrashLoop) -> list[str]:
    if not crash.restarts:
        return []
    lines = [f"  {crash.state}"]
    lines += [f"    | {line}" for line in crash.log_tail[-STATUS_TAIL_LINES:]]
    if crash.log_path:
        lines.append(f"    log: {crash.log_path}")
    return lines


def _p90(forecast: forecast_pb2.Forecast) -> list[float]:
    """A forecast's p90 series (empty when it has none)."""
    return next((list(q.arrival_rps) for q in forecast.quantiles if abs(q.quantile - 0.9) < 1e-9), [])


def service_rows(response: status_pb2.GetStatusResponse, now_s: float | None = None) -> list[dict[str, Any]]:
    """One row per service: what `ebbflow up`'s supervisor runs (state, restarts, last exit) joined with what is
    announced in NATS (address, pid, heartbeat); a service announced by no supervisor (another machine) too."""
    now = time.time() if now_s is None else now_s
    announced: dict[str, list[discovery_pb2.ServiceInstance]] = {}
    for instance in response.services:
        announced.setdefault(instance.service, []).append(instance)
    rows = []
    for supervised in response.supervised:
        mine = [i for i in announced.pop(supervised.service, []) if i.grpc_address == supervised.grpc_address]
        rows.append(
            {
                "service": supervised.service,
                "state": supervised.state if supervised.state != "running" or mine else "running, not announced",
                "pid": supervised.pid,
                "address": supervised.grpc_address,
                "metrics": supervised.metrics_address,
                "restarts": supervised.restarts,
                "last_exit": supervised.last_exit,
                "heartbeat_age_s": round(now - mine[0].heartbeat_unix_s, 1) if mine else None,
                "next_start_in_s": round(max(0.0, supervised.next_start_unix_s - now), 1) if supervised.state == "backoff" else None,
            }
        )
    for name in sorted(announced):
        for instance in announced[name]:
            rows.append(
                {
                    "service": name, "state": "announced", "pid": instance.pid, "address": instance.grpc_address,
                    "metrics": instance.metrics_address, "restarts": instance.restarts, "last_exit": instance.last_exit,
                    "heartbeat_age_s": round(now - instance.heartbeat_unix_s, 1), "next_start_in_s": None,
                }
            )
    return rows


def services_table(response: status_pb2.GetStatusResponse) -> list[str]:
    rows = service_rows(response)
    if not rows:
        return []
    lines = [f"{'SERVICE':<11} {'STATE':<24} {'PID':>7} {'GRPC':<21} {'RESTARTS':>8}  LAST EXIT"]
    for row in rows:
        state = row["state"] + (f" (next try in {row['next_start_in_s']:.0f} s)" if row["next_start_in_s"] is not None else "")
        lines.append(f"{row['service']:<11} {state:<24} {row['pid'] or '-':>7} {row['address']:<21} {row['restarts']:>8}  {row['last_exit'] or '-'}")
    return lines


def status_table(response: status_pb2.GetStatusResponse) -> str:
    header = (
        f"{'MODEL':<16} {'DESIRED':>7} {'READY':>5} {'START':>5} {'DRAIN':>5} {'INST':>4} {'BATCH':>5} "
        f"{'IN_FLIGHT':>9} {'ARRIVAL_RPS':>11} {'P90_FCST':>8} {'GEN':>4}  LAST DECISION"
    )
    lines = [f"router: {response.router_address}", nats_line(response.nats), header]
    for m in response.models:
        if _fresh(m):
            in_flight, arrival = f"{m.in_flight:>9.2f}", f"{m.arrival_rps:>11.2f}"
        else:  # no data is not zero load
            in_flight, arrival = f"{load_word(m.load_status):>9}", f"{load_word(m.load_status):>11}"
        p90 = _p90(m.forecast)
        forecast = f"{max(p90):>8.2f}" if p90 else f"{'-':>8}"
        flags = "".join(f" [{flag}]" for flag in (m.mode if m.mode == "advisory" else "", f"pinned {m.pinned}" if m.pinned else "") if flag)
        lines.append(
            f"{m.name:<16} {m.desired_replicas:>7} {m.ready_replicas:>5} {m.starting_replicas:>5} {m.draining_replicas:>5} "
            f"{m.instances_per_replica:>4} {m.max_batch_size:>5} {in_flight} {arrival} {forecast} {m.generation:>4}  "
            f"{m.last_decision_reason}{flags}"
        )
        lines += _crash_loop_lines(m.crash_loop)
    services = services_table(response)
    if services:
        lines += ["", *services]
    return "\n".join(lines)
