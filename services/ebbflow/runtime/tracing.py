"""Traces across services: OpenTelemetry, configured the standard way, off unless asked for.

`setup(service)` installs a tracer provider with an OTLP exporter when the
environment asks for one (OpenTelemetry's own variables:
`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, and
`OTEL_TRACES_EXPORTER` other than `none`; `OTEL_SDK_DISABLED=true` turns it
off). The exporter reads the rest (`OTEL_EXPORTER_OTLP_INSECURE`, headers,
timeouts) itself. Without it `enabled()` is False and nothing here creates a
span, reads a header or writes one: no cost when off.

Trace context crosses services in W3C `traceparent` form: in NATS message
headers (load snapshots, forecasts), in gRPC metadata (the router), and in
the `traceparent` field of a `DesiredState`, since a KV write carries no
headers. One scaling decision is one trace (docs/architecture.md "Traces"):
the scheduler's `decide` span is its root, linked to the load snapshot and
the forecast it read; the actuator's `actuate` span and each replica's
`replica start` span (ended when Triton says ready) are its descendants.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any, Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext

log = logging.getLogger(__name__)

_enabled = False


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for exported traces (OpenTelemetry's variables, nothing of ours)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(endpoint) or exporter == "otlp"


def setup(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Install the OTLP tracer provider for this process when the environment asks for it; whether it did."""
    global _enabled
    if _enabled or not wanted(environ):
        return _enabled
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.name": f"ebbflow-{service}", "service.namespace": "ebbflow"}
    provider = TracerProvider(resource=Resource.create(attributes))  # OTEL_RESOURCE_ATTRIBUTES merge in
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # the batch still queued goes out at a clean exit
    _enabled = True
    log.info("traces: OTLP export on (%s)", environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "default endpoint")
    return True


def shutdown() -> None:
    """Flush and stop the exporter (a no-op when tracing is off)."""
    if _enabled:
        provider = trace.get_tracer_provider()
        getattr(provider, "shutdown", lambda: None)()


def enabled() -> bool:
    return _enabled


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def traceparent(span: Span | None = None) -> str:
    """The W3C traceparent of `span` (the current one by default); "" when there is none."""
    carrier: dict[str, str] = {}
    context = trace.set_span_in_context(span) if span is not None else None
    propagate.inject(carrier, context=context)
    return carrier.get("traceparent", "")


def headers(span: Span | None = None) -> dict[str, str] | None:
    """NATS headers carrying the trace context; None when tracing is off (a message without headers is cheaper)."""
    if not _enabled:
        return None
    value = traceparent(span)
    return {"traceparent": value} if value else None


def context_from(value: str | Mapping[str, str] | None) -> Context | None:
    """The trace context in a traceparent string or a header mapping; None when there is none."""
    if not value:
        return None
    carrier = {"traceparent": value} if isinstance(value, str) else dict(value)
    if "traceparent" not in carrier:
        return None
    context = propagate.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def span_context_from(value: str | Mapping[str, str] | None) -> SpanContext | None:
    """The remote span a traceparent names, for a span link; None when there is none."""
    context = context_from(value)
    return trace.get_current_span(context).get_span_context() if context is not None else None


def links(*contexts: SpanContext | None) -> Sequence[Link]:
    return [Link(c) for c in contexts if c is not None and c.is_valid]


def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    for key, value in attributes.items():
        span.set_attribute(key, value)
