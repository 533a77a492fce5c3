"""runtime.tracing: off unless OpenTelemetry's own environment variables ask for an exporter."""

from __future__ import annotations

from ebbflow.runtime import tracing


def test_traces_are_off_unless_the_environment_asks_for_them():
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.enabled() and tracing.headers() is None, "this process never asked: no headers, no spans"
