"""Every NATS subject, stream and KV bucket name, in one place."""

from __future__ import annotations

# Core NATS subjects (loss-tolerant, repeated or superseded every second).
ROUTER_TELEMETRY = "ebbflow.router.telemetry"
LOAD = "ebbflow.load"  # LOAD.<model>: LoadSnapshot from the collector
FORECAST = "ebbflow.forecast"  # FORECAST.<model>: Forecast from the forecaster
WAKEUP = "ebbflow.wakeup"  # WAKEUP.<model>: the router holds requests for a model
DRAIN_ACK = "ebbflow.drain.ack"  # DRAIN_ACK.<model>.<replica_id>: DrainAck from a router worker
CRASH_LOOPS = "ebbflow.crashloops"  # CrashLoops from the actuator, every reconcile tick


def load_subject(model: str) -> str:
    return f"{LOAD}.{model}"


def forecast_subject(model: str) -> str:
    return f"{FORECAST}.{model}"


def wakeup_subject(model: str) -> str:
    return f"{WAKEUP}.{model}"


def drain_ack_subject(model: str, replica_id: str) -> str:
    return f"{DRAIN_ACK}.{model}.{replica_id}"


# JetStream streams (must not be lost).
DECISIONS_STREAM = "DECISIONS"
DECISIONS = "ebbflow.decisions"  # DECISIONS.<model>: ScalingDecision
LIFECYCLE_STREAM = "LIFECYCLE"
LIFECYCLE = "ebbflow.lifecycle"  # LIFECYCLE.<model>: LifecycleEvent
HISTORY_FINE_STREAM = "HISTORY_FINE"
HISTORY_FINE = "ebbflow.history.fine"  # HISTORY_FINE.<model>: HistoryChunk, one row per collector interval
HISTORY_COARSE_STREAM = "HISTORY_COARSE"
HISTORY_COARSE = "ebbflow.history.coarse"  # HISTORY_COARSE.<model>: HistoryChunk of long-term rows


def decision_subject(model: str) -> str:
    return f"{DECISIONS}.{model}"


def lifecycle_subject(model: str) -> str:
    return f"{LIFECYCLE}.{model}"


# JetStream KV buckets.
REPLICAS_BUCKET = "replicas"  # key <model>.<replica_id>: ReplicaEntry, written by the actuator
DESIRED_BUCKET = "desired"  # key <model>: DesiredState, written by the scheduler (CAS)
POLICIES_BUCKET = "policies"  # key <model>: ScalingPolicy
MODELS_BUCKET = "models"  # key <model>: Triton ModelConfig from the repository, written by the actuator
CAPACITY_BUCKET = "capacity"  # key <content hash>: CapacityCurves, written by the scheduler (decisions refer to them)
LEASES_BUCKET = "leases"  # key SCHEDULER_LEASE: SchedulerLease, which scheduler decides (CAS)
SCHEDULER_LEASE = "scheduler"
TENANTS_BUCKET = "tenants"  # key <tenant name>: Tenant (API key hash, models, limits), written by the scheduler's TenantService
SERVICES_BUCKET = "services"  # key <service>.<instance_id>: ServiceInstance; supervisor.<id>: Supervisor (runtime/discovery.py)
SERVICES_TTL_S = 10.0
"""An announcement not renewed for this long is gone (a dead service's address disappears by itself)."""


def replica_key(model: str, replica_id: str) -> str:
    return f"{model}.{replica_id}"
