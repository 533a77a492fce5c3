"""Calls on a running `ebbflow up`'s control API, found through its state directory (up.read_state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import grpc

from ebbflow.runtime.errors import EbbflowError
from ebbflow.up import read_state
from ebbflow.v1 import status_pb2, status_pb2_grpc

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


def control_call(state_dir: Path, stub_class: Callable[[grpc.Channel], Any], call: Callable[[Any], Any]) -> Any:
    """One call on a control-plane API of the running `ebbflow up`; the service's own message on a refusal."""
    state = read_state(state_dir)
    with grpc.insecure_channel(state["control"]) as channel:
        try:
            return call(stub_class(channel))
        except grpc.RpcError as error:
            if error.code() in ANSWERED and error.details():
                raise EbbflowError(error.details()) from None
            raise EbbflowError(f"ebbflow up at {state['control']} did not answer: {error.details()}") from None


def fetch_status(state_dir: Path, model: str = "", timeout_s: float = 5.0) -> status_pb2.GetStatusResponse:
    state = read_state(state_dir)
    with grpc.insecure_channel(state["control"]) as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        try:
            return stub.GetStatus(status_pb2.GetStatusRequest(model=model), timeout=timeout_s)
        except grpc.RpcError as error:
            raise EbbflowError(f"ebbflow up at {state['control']} did not answer: {error.details()}") from None
