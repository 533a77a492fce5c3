"""Other autoscalers, from their documented defaults, as simulator controllers.

Each module cites where every constant comes from. All of them see the same
telemetry as ebbflow (per-second arrivals and in-flight requests) and drive
the same simulated fleet (same bounds, cold start and service times).
"""
