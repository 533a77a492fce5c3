"""The collector: the live load picture from router telemetry and Triton /metrics."""
