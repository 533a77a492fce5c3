"""The status view: what `ebbflow status` shows, built from the registry, desired state and load (served by
StatusService), and rendered as a table or JSON."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import grpc

from ebbflow.policy import mode_from_proto
from ebbflow.runtime.registry import RegistryView
from ebbflow.runtime.wire import DRAINING, READY, STARTING, address, state_name
from ebbflow.v1 import forecast_pb2, load_pb2, policy_pb2, registry_pb2, scheduling_pb2, status_pb2, status_pb2_grpc


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


class StatusService(status_pb2_grpc.StatusServiceServicer):
    def __init__(
        self,
        view: RegistryView,
        desired: Mapping[str, scheduling_pb2.DesiredState],
        loads: Mapping[str, load_pb2.LoadSnapshot],
        router_address: str,
        forecasts: Callable[[], Mapping[str, forecast_pb2.Forecast]] = dict,
        crash_loops: Callable[[], Mapping[str, status_pb2.CrashLoop]] = dict,
    ) -> None:
        self.view = view
        self.desired = desired
        self.loads = loads
        self.router_address = router_address
        self.forecasts = forecasts
        self.crash_loops = crash_loops

    async def GetStatus(self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext) -> status_pb2.GetStatusResponse:
        models = build_status(self.view.policies, self.desired, list(self.view.replicas.values()), self.loads, request.model, self.forecasts(), self.crash_loops())
        if request.model and not models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.model}'")
        return status_pb2.GetStatusResponse(models=models, router_address=self.router_address)


# ---- rendering ------------------------------------------------------------------


def status_json(response: status_pb2.GetStatusResponse) -> dict[str, Any]:
    return {
        "router": response.router_address,
        "models": [
            {
                "name": m.name,
                "desired_replicas": m.desired_replicas,
                "ready_replicas": m.ready_replicas,
                "starting_replicas": m.starting_replicas,
                "draining_replicas": m.draining_replicas,
                "min_replicas": m.min_replicas,
                "max_replicas": m.max_replicas,
                "in_flight": round(m.in_flight, 3),
                "arrival_rps": round(m.arrival_rps, 3),
                "load_status": load_pb2.DataStatus.Name(m.load_status).removeprefix("DATA_STATUS_").lower(),
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


def status_table(response: status_pb2.GetStatusResponse) -> str:
    header = (
        f"{'MODEL':<16} {'DESIRED':>7} {'READY':>5} {'START':>5} {'DRAIN':>5} {'INST':>4} {'BATCH':>5} "
        f"{'IN_FLIGHT':>9} {'ARRIVAL_RPS':>11} {'P90_FCST':>8} {'GEN':>4}  LAST DECISION"
    )
    lines = [f"router: {response.router_address}", header]
    for m in response.models:
        p90 = _p90(m.forecast)
        forecast = f"{max(p90):>8.2f}" if p90 else f"{'-':>8}"
        flags = "".join(f" [{flag}]" for flag in (m.mode if m.mode == "advisory" else "", f"pinned {m.pinned}" if m.pinned else "") if flag)
        lines.append(
            f"{m.name:<16} {m.desired_replicas:>7} {m.ready_replicas:>5} {m.starting_replicas:>5} {m.draining_replicas:>5} "
            f"{m.instances_per_replica:>4} {m.max_batch_size:>5} {m.in_flight:>9.2f} {m.arrival_rps:>11.2f} {forecast} {m.generation:>4}  "
            f"{m.last_decision_reason}{flags}"
        )
        lines += _crash_loop_lines(m.crash_loop)
    return "\n".join(lines)
