"""Calls on a running stack's services, found through the state directory `ebbflow up` wrote, or through NATS.

Where a service is: with a NATS URL (`--nats`, for a stack on other machines), the newest live announcement of
that service in the `services` bucket (runtime/discovery.py); otherwise the addresses `ebbflow up` fixed for its
services and wrote in the state directory's state.json (up.read_state), which answer even while NATS is away.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import grpc

from ebbflow.runtime.errors import EbbflowError
from ebbflow.up import read_state
from ebbflow.v1 import collector_pb2_grpc, forecast_pb2_grpc, policy_pb2_grpc, scheduling_pb2_grpc, status_pb2, status_pb2_grpc, tenant_pb2_grpc

ANSWERED = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)
"""Refusals whose message is the service's own answer, shown as it is (other failures say the stack did not answer)."""

SERVICE_OF_STUB: dict[Any, tuple[str, ...]] = {
    collector_pb2_grpc.CollectorServiceStub: ("collector",),
    forecast_pb2_grpc.ForecasterServiceStub: ("forecaster",),
    policy_pb2_grpc.PolicyServiceStub: ("scheduler",),
    scheduling_pb2_grpc.SchedulerServiceStub: ("scheduler",),
    tenant_pb2_grpc.TenantServiceStub: ("scheduler",),
    # Every service answers status; the actuator first (it also knows the registry writes waiting for NATS).
    status_pb2_grpc.StatusServiceStub: ("actuator", "scheduler", "collector", "router", "forecaster"),
}


@dataclass(frozen=True)
class Where:
    """How to find the stack: its state directory, or a NATS URL its services announce themselves on."""

    state_dir: Path
    nats_url: str = ""


def addresses(where: Where | Path, services: tuple[str, ...]) -> list[tuple[str, str]]:
    """(service, gRPC address) of each of `services` that can be found, in that order."""
    if isinstance(where, Path):
        where = Where(where)
    if where.nats_url:
        return asyncio.run(_discover(where.nats_url, services))
    state = read_state(where.state_dir)
    known = state.get("services") or {}
    found = [(name, known[name]["grpc"]) for name in services if name in known]
    if not found and "control" in state:  # written by an older ebbflow up: one control address for everything
        found = [(services[0], state["control"])]
    return found


async def _discover(nats_url: str, services: tuple[str, ...]) -> list[tuple[str, str]]:
    from ebbflow.runtime.bus import connect
    from ebbflow.runtime.discovery import list_services

    bus = await connect(nats_url, name="ebbflow-cli", connect_timeout_s=3.0)
    try:
        announced = await list_services(bus)
    finally:
        await bus.close()
    return [(name, i.grpc_address) for name in services for i in announced if i.service == name]


def control_call(where: Where | Path, stub_class: Callable[[grpc.Channel], Any], call: Callable[[Any], Any]) -> Any:
    """One call on the service that serves `stub_class`; the service's own message on a refusal. Where several
    can answer (status), the next is asked when one does not answer."""
    services = SERVICE_OF_STUB[stub_class]
    found = addresses(where, services)
    if not found:
        raise EbbflowError(f"no {' or '.join(services)} of the stack is announced in NATS; is it running?")
    failures = []
    for name, address in found:
        with grpc.insecure_channel(address) as channel:
            try:
                return call(stub_class(channel))
            except grpc.RpcError as error:
                if error.code() in ANSWERED and error.details() and error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise EbbflowError(error.details()) from None
                if error.code() == grpc.StatusCode.UNAVAILABLE and error.details() and "connect" not in error.details().lower():
                    raise EbbflowError(error.details()) from None  # the service answered: it cannot do it now
                failures.append(f"{name} at {address}: {error.details()}")
    raise EbbflowError("the stack did not answer: " + "; ".join(failures))


def fetch_status(where: Where | Path, model: str = "", timeout_s: float = 5.0) -> status_pb2.GetStatusResponse:
    return control_call(where, status_pb2_grpc.StatusServiceStub, lambda stub: stub.GetStatus(status_pb2.GetStatusRequest(model=model), timeout=timeout_s))
