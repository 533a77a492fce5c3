"""One small error hierarchy; the gRPC error interceptor and the CLI translate it at the edges."""

from __future__ import annotations


class EbbflowError(Exception):
    """Base of every error ebbflow raises on purpose. Messages say what was wrong and what to do."""


class ConfigError(EbbflowError):
    """Invalid configuration or policy (maps to INVALID_ARGUMENT)."""


class NotFoundError(EbbflowError):
    """A named thing (model, replica, decision) does not exist (maps to NOT_FOUND)."""


class UnavailableError(EbbflowError):
    """A dependency (NATS, a replica) cannot serve right now (maps to UNAVAILABLE)."""


class AlreadyRunningError(EbbflowError):
    """Another ebbflow holds the port or state directory."""
