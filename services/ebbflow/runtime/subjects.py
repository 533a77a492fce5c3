"""Every NATS subject, stream and KV bucket name, in one place."""

from __future__ import annotations

# Core NATS subjects (loss-tolerant, repeated or superseded every second).
ROUTER_TELEMETRY = "ebbflow.router.telemetry"
LOAD = "ebbflow.load"  # LOAD.<model>: LoadSnapshot from the collector
WAKEUP = "ebbflow.wakeup"  # WAKEUP.<model>: the router holds requests for a model


def load_subject(model: str) -> str:
    return f"{LOAD}.{model}"


def wakeup_subject(model: str) -> str:
    return f"{WAKEUP}.{model}"


# JetStream streams (must not be lost).
DECISIONS_STREAM = "DECISIONS"
DECISIONS = "ebbflow.decisions"  # DECISIONS.<model>: ScalingDecision
LIFECYCLE_STREAM = "LIFECYCLE"
LIFECYCLE = "ebbflow.lifecycle"  # LIFECYCLE.<model>: LifecycleEvent


def decision_subject(model: str) -> str:
    return f"{DECISIONS}.{model}"


def lifecycle_subject(model: str) -> str:
    return f"{LIFECYCLE}.{model}"


# JetStream KV buckets.
REPLICAS_BUCKET = "replicas"  # key <model>.<replica_id>: ReplicaEntry, written by the actuator
DESIRED_BUCKET = "desired"  # key <model>: DesiredState, written by the scheduler (CAS)
POLICIES_BUCKET = "policies"  # key <model>: ScalingPolicy


def replica_key(model: str, replica_id: str) -> str:
    return f"{model}.{replica_id}"
