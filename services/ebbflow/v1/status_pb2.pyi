from ebbflow.v1 import discovery_pb2 as _discovery_pb2
from ebbflow.v1 import forecast_pb2 as _forecast_pb2
from ebbflow.v1 import load_pb2 as _load_pb2
from ebbflow.v1 import registry_pb2 as _registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelStatus(_message.Message):
    __slots__ = ("name", "desired_replicas", "ready_replicas", "starting_replicas", "draining_replicas", "in_flight", "arrival_rps", "generation", "last_decision_reason", "last_decision_unix_s", "load_status", "min_replicas", "max_replicas", "replicas", "instances_per_replica", "max_batch_size", "mode", "pinned", "forecast", "crash_loop")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    STARTING_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_RPS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LAST_DECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_DECISION_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_STATUS_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    CRASH_LOOP_FIELD_NUMBER: _ClassVar[int]
    name: str
    desired_replicas: int
    ready_replicas: int
    starting_replicas: int
    draining_replicas: int
    in_flight: float
    arrival_rps: float
    generation: int
    last_decision_reason: str
    last_decision_unix_s: float
    load_status: _load_pb2.DataStatus
    min_replicas: int
    max_replicas: int
    replicas: _containers.RepeatedCompositeFieldContainer[_registry_pb2.ReplicaEntry]
    instances_per_replica: int
    max_batch_size: int
    mode: str
    pinned: str
    forecast: _forecast_pb2.Forecast
    crash_loop: CrashLoop
    def __init__(self, name: _Optional[str] = ..., desired_replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ..., starting_replicas: _Optional[int] = ..., draining_replicas: _Optional[int] = ..., in_flight: _Optional[float] = ..., arrival_rps: _Optional[float] = ..., generation: _Optional[int] = ..., last_decision_reason: _Optional[str] = ..., last_decision_unix_s: _Optional[float] = ..., load_status: _Optional[_Union[_load_pb2.DataStatus, str]] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[_registry_pb2.ReplicaEntry, _Mapping]]] = ..., instances_per_replica: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., mode: _Optional[str] = ..., pinned: _Optional[str] = ..., forecast: _Optional[_Union[_forecast_pb2.Forecast, _Mapping]] = ..., crash_loop: _Optional[_Union[CrashLoop, _Mapping]] = ...) -> None: ...

class CrashLoop(_message.Message):
    __slots__ = ("restarts", "state", "next_try_unix_s", "reason", "log_tail", "log_path", "last_failure_unix_s")
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_TRY_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    restarts: int
    state: str
    next_try_unix_s: float
    reason: str
    log_tail: _containers.RepeatedScalarFieldContainer[str]
    log_path: str
    last_failure_unix_s: float
    def __init__(self, restarts: _Optional[int] = ..., state: _Optional[str] = ..., next_try_unix_s: _Optional[float] = ..., reason: _Optional[str] = ..., log_tail: _Optional[_Iterable[str]] = ..., log_path: _Optional[str] = ..., last_failure_unix_s: _Optional[float] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class NatsStatus(_message.Message):
    __slots__ = ("url", "connected", "since_unix_s", "reconnects", "supervised", "server_restarts", "last_server_exit", "last_server_exit_unix_s", "pending_writes")
    URL_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    SUPERVISED_FIELD_NUMBER: _ClassVar[int]
    SERVER_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SERVER_EXIT_FIELD_NUMBER: _ClassVar[int]
    LAST_SERVER_EXIT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    PENDING_WRITES_FIELD_NUMBER: _ClassVar[int]
    url: str
    connected: bool
    since_unix_s: float
    reconnects: int
    supervised: bool
    server_restarts: int
    last_server_exit: str
    last_server_exit_unix_s: float
    pending_writes: int
    def __init__(self, url: _Optional[str] = ..., connected: bool = ..., since_unix_s: _Optional[float] = ..., reconnects: _Optional[int] = ..., supervised: bool = ..., server_restarts: _Optional[int] = ..., last_server_exit: _Optional[str] = ..., last_server_exit_unix_s: _Optional[float] = ..., pending_writes: _Optional[int] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("models", "router_address", "nats", "services", "supervised", "answered_by")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NATS_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    SUPERVISED_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    router_address: str
    nats: NatsStatus
    services: _containers.RepeatedCompositeFieldContainer[_discovery_pb2.ServiceInstance]
    supervised: _containers.RepeatedCompositeFieldContainer[_discovery_pb2.SupervisedService]
    answered_by: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., router_address: _Optional[str] = ..., nats: _Optional[_Union[NatsStatus, _Mapping]] = ..., services: _Optional[_Iterable[_Union[_discovery_pb2.ServiceInstance, _Mapping]]] = ..., supervised: _Optional[_Iterable[_Union[_discovery_pb2.SupervisedService, _Mapping]]] = ..., answered_by: _Optional[str] = ...) -> None: ...

class CrashLoops(_message.Message):
    __slots__ = ("models",)
    class ModelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: CrashLoop
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[CrashLoop, _Mapping]] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.MessageMap[str, CrashLoop]
    def __init__(self, models: _Optional[_Mapping[str, CrashLoop]] = ...) -> None: ...
