"""The actuator: makes actual replicas match the desired state."""
