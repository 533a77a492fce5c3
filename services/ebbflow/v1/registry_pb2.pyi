from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_STATE_UNSPECIFIED: _ClassVar[ReplicaState]
    REPLICA_STATE_STARTING: _ClassVar[ReplicaState]
    REPLICA_STATE_READY: _ClassVar[ReplicaState]
    REPLICA_STATE_DRAINING: _ClassVar[ReplicaState]
    REPLICA_STATE_STOPPED: _ClassVar[ReplicaState]
    REPLICA_STATE_FAILED: _ClassVar[ReplicaState]

class LifecycleEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIFECYCLE_EVENT_KIND_UNSPECIFIED: _ClassVar[LifecycleEventKind]
    LIFECYCLE_EVENT_KIND_STARTING: _ClassVar[LifecycleEventKind]
    LIFECYCLE_EVENT_KIND_READY: _ClassVar[LifecycleEventKind]
    LIFECYCLE_EVENT_KIND_DRAINING: _ClassVar[LifecycleEventKind]
    LIFECYCLE_EVENT_KIND_STOPPED: _ClassVar[LifecycleEventKind]
    LIFECYCLE_EVENT_KIND_FAILED: _ClassVar[LifecycleEventKind]
REPLICA_STATE_UNSPECIFIED: ReplicaState
REPLICA_STATE_STARTING: ReplicaState
REPLICA_STATE_READY: ReplicaState
REPLICA_STATE_DRAINING: ReplicaState
REPLICA_STATE_STOPPED: ReplicaState
REPLICA_STATE_FAILED: ReplicaState
LIFECYCLE_EVENT_KIND_UNSPECIFIED: LifecycleEventKind
LIFECYCLE_EVENT_KIND_STARTING: LifecycleEventKind
LIFECYCLE_EVENT_KIND_READY: LifecycleEventKind
LIFECYCLE_EVENT_KIND_DRAINING: LifecycleEventKind
LIFECYCLE_EVENT_KIND_STOPPED: LifecycleEventKind
LIFECYCLE_EVENT_KIND_FAILED: LifecycleEventKind

class ReplicaEntry(_message.Message):
    __slots__ = ("model", "replica_id", "host", "grpc_port", "http_port", "metrics_port", "state", "instances", "max_batch_size", "gpu_slot", "applied_generation", "pid", "started_at_unix_s", "ready_at_unix_s", "speed_factor", "gpu_memory_gb")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    GRPC_PORT_FIELD_NUMBER: _ClassVar[int]
    HTTP_PORT_FIELD_NUMBER: _ClassVar[int]
    METRICS_PORT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GPU_SLOT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    READY_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    SPEED_FACTOR_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    model: str
    replica_id: str
    host: str
    grpc_port: int
    http_port: int
    metrics_port: int
    state: ReplicaState
    instances: int
    max_batch_size: int
    gpu_slot: str
    applied_generation: int
    pid: int
    started_at_unix_s: float
    ready_at_unix_s: float
    speed_factor: float
    gpu_memory_gb: float
    def __init__(self, model: _Optional[str] = ..., replica_id: _Optional[str] = ..., host: _Optional[str] = ..., grpc_port: _Optional[int] = ..., http_port: _Optional[int] = ..., metrics_port: _Optional[int] = ..., state: _Optional[_Union[ReplicaState, str]] = ..., instances: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., gpu_slot: _Optional[str] = ..., applied_generation: _Optional[int] = ..., pid: _Optional[int] = ..., started_at_unix_s: _Optional[float] = ..., ready_at_unix_s: _Optional[float] = ..., speed_factor: _Optional[float] = ..., gpu_memory_gb: _Optional[float] = ...) -> None: ...

class LifecycleEvent(_message.Message):
    __slots__ = ("kind", "replica", "time_unix_s", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: LifecycleEventKind
    replica: ReplicaEntry
    time_unix_s: float
    message: str
    def __init__(self, kind: _Optional[_Union[LifecycleEventKind, str]] = ..., replica: _Optional[_Union[ReplicaEntry, _Mapping]] = ..., time_unix_s: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class DrainAck(_message.Message):
    __slots__ = ("router_id", "model", "replica_id", "in_flight")
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    model: str
    replica_id: str
    in_flight: int
    def __init__(self, router_id: _Optional[str] = ..., model: _Optional[str] = ..., replica_id: _Optional[str] = ..., in_flight: _Optional[int] = ...) -> None: ...
