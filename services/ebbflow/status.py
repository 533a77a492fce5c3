"""The status view: what `ebbflow status` shows, built from the registry, desired state and load."""

from __future__ import annotations

from typing import Callable, Mapping

import grpc

from ebbflow.policy import mode_from_proto
from ebbflow.runtime.registry import DRAINING, READY, STARTING, RegistryView
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
