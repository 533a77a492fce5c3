"""What all services share: config, NATS bus, gRPC server kit, telemetry, process supervisor."""
