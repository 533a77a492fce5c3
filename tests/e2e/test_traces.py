"""Traces across services, exported over OTLP to a receiver the test runs: one trace per scaling decision
(snapshot and forecast linked, decision, actuation, replica ready) and a router span under the client's trace."""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as triton_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from tritonclient.utils import InferenceServerException

from ebbflow.runtime.process import free_port
from tests.conftest import expected_output, llm_inputs
from tests.e2e.test_up import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: every span exported to it, with the service that sent it."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> list[tuple[str, trace_pb2.Span]]:
        with self.lock:
            return [(service, span) for service, span in self.spans if span.name == name]

    def by_id(self) -> dict[bytes, tuple[str, trace_pb2.Span]]:
        with self.lock:
            return {span.span_id: (service, span) for service, span in self.spans}


def attribute(span: trace_pb2.Span, key: str) -> object:
    for a in span.attributes:
        if a.key == key:
            value = a.value
            return getattr(value, value.WhichOneof("value"))
    return None


def a_decision_trace(receiver: Receiver) -> list[tuple[str, trace_pb2.Span]] | None:
    """A trace whose root `decide` span links a load snapshot and a forecast the receiver got, with an `actuate`
    child and a `replica start` grandchild that ended ready; its spans, or None while there is none."""
    spans = receiver.by_id()
    children: dict[bytes, list[tuple[str, trace_pb2.Span]]] = defaultdict(list)
    for service, span in spans.values():
        children[span.parent_span_id].append((service, span))
    for service, decide in receiver.named("decide"):
        linked = {spans[link.span_id][1].name for link in decide.links if link.span_id in spans}
        if service != "ebbflow-scheduler" or decide.parent_span_id or not {"load snapshot", "forecast"} <= linked:
            continue
        for actuator, actuate in children[decide.span_id]:
            if actuate.name != "actuate" or actuator != "ebbflow-actuator":
                continue
            for _, start in children[actuate.span_id]:
                if start.name == "replica start" and attribute(start, "ebbflow.cold_start_s") is not None:
                    return [(service, decide), (actuator, actuate), (actuator, start)]
    return None


def test_a_scaling_decision_is_one_trace_and_a_request_joins_the_clients_trace(tmp_path: Path):
    receiver = Receiver()
    config = tmp_path / "ebbflow.yaml"
    config.write_text(
        "router:\n  tracing: true\nforecaster:\n  resolutions_s: [2.0, 60.0]\nactuator:\n  time_scale: 0.02\n  exit_timeout_s: 3\n"
        "models:\n  llm:\n    min_replicas: 1\n    max_replicas: 2\n    target_in_flight_per_replica: 1\n    scale_down_delay_s: 120\n"
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    port = free_port()
    up = Up(tmp_path / "state", config, port, env=env)
    stop_clients = threading.Event()
    errors: list[str] = []

    def client() -> None:
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as connection:
            while not stop_clients.is_set():
                try:
                    connection.infer("llm", llm_inputs("one two three four five", 40), client_timeout=30)
                except InferenceServerException as error:
                    errors.append(str(error))

    try:
        up.wait_line("ready", 120)

        # A request carrying the client's trace context: the router's span is its child, in its trace.
        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        prompt = "a traced request"
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as connection:
            result = connection.infer("llm", llm_inputs(prompt, 4), headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == expected_output(prompt, 4)

        # Load that needs a second replica: the decision to add it is one trace, from its inputs to the replica ready.
        clients = [threading.Thread(target=client, daemon=True) for _ in range(3)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 120
        while (found := a_decision_trace(receiver)) is None:
            assert time.monotonic() < deadline, (
                f"no decision trace; spans seen: {sorted({(s, x.name) for s, x in receiver.spans})}\n{''.join(up.output[-40:])}"
            )
            time.sleep(0.5)
        stop_clients.set()
        for thread in clients:
            thread.join(60)
        assert not errors, errors[:3]

        (_, decide), (_, actuate), (_, start) = found
        assert decide.trace_id == actuate.trace_id == start.trace_id
        assert attribute(decide, "ebbflow.model") == "llm" and attribute(decide, "ebbflow.replicas.to") == 2
        assert attribute(actuate, "ebbflow.generation") == attribute(decide, "ebbflow.generation") and attribute(actuate, "ebbflow.starts") >= 1
        assert start.end_time_unix_nano > start.start_time_unix_nano and start.status.code != trace_pb2.Status.STATUS_CODE_ERROR

        deadline = time.monotonic() + 10
        while not (requests := [s for service, s in receiver.named("ModelInfer") if s.trace_id.hex() == trace_id]):
            assert time.monotonic() < deadline, "no router span in the client's trace"
            time.sleep(0.2)
        (request,) = requests
        assert request.parent_span_id.hex() == parent_id and attribute(request, "ebbflow.model") == "llm"
    finally:
        stop_clients.set()
        code = up.stop(60)
        receiver.server.stop(None)
    assert code == 0, "".join(up.output)

