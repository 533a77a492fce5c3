from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_STATUS_UNSPECIFIED: _ClassVar[DataStatus]
    DATA_STATUS_FRESH: _ClassVar[DataStatus]
    DATA_STATUS_STALE: _ClassVar[DataStatus]
    DATA_STATUS_UNKNOWN: _ClassVar[DataStatus]
DATA_STATUS_UNSPECIFIED: DataStatus
DATA_STATUS_FRESH: DataStatus
DATA_STATUS_STALE: DataStatus
DATA_STATUS_UNKNOWN: DataStatus

class LatencyHistogram(_message.Message):
    __slots__ = ("upper_bounds_s", "counts", "sum_s")
    UPPER_BOUNDS_S_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_S_FIELD_NUMBER: _ClassVar[int]
    upper_bounds_s: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum_s: float
    def __init__(self, upper_bounds_s: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., sum_s: _Optional[float] = ...) -> None: ...

class ModelTelemetry(_message.Message):
    __slots__ = ("model", "arrivals", "in_flight_avg", "in_flight_now", "errors", "latency")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ARRIVALS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_AVG_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_NOW_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    model: str
    arrivals: int
    in_flight_avg: float
    in_flight_now: int
    errors: int
    latency: LatencyHistogram
    def __init__(self, model: _Optional[str] = ..., arrivals: _Optional[int] = ..., in_flight_avg: _Optional[float] = ..., in_flight_now: _Optional[int] = ..., errors: _Optional[int] = ..., latency: _Optional[_Union[LatencyHistogram, _Mapping]] = ...) -> None: ...

class RouterTelemetry(_message.Message):
    __slots__ = ("router_id", "window_end_unix_s", "window_s", "models")
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    window_end_unix_s: float
    window_s: float
    models: _containers.RepeatedCompositeFieldContainer[ModelTelemetry]
    def __init__(self, router_id: _Optional[str] = ..., window_end_unix_s: _Optional[float] = ..., window_s: _Optional[float] = ..., models: _Optional[_Iterable[_Union[ModelTelemetry, _Mapping]]] = ...) -> None: ...

class ReplicaLoad(_message.Message):
    __slots__ = ("replica_id", "address", "status", "in_system", "queued", "pending_requests", "batch_efficiency", "inference_rps", "age_s")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IN_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_EFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_RPS_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    address: str
    status: DataStatus
    in_system: float
    queued: float
    pending_requests: float
    batch_efficiency: float
    inference_rps: float
    age_s: float
    def __init__(self, replica_id: _Optional[str] = ..., address: _Optional[str] = ..., status: _Optional[_Union[DataStatus, str]] = ..., in_system: _Optional[float] = ..., queued: _Optional[float] = ..., pending_requests: _Optional[float] = ..., batch_efficiency: _Optional[float] = ..., inference_rps: _Optional[float] = ..., age_s: _Optional[float] = ...) -> None: ...

class LoadSnapshot(_message.Message):
    __slots__ = ("model", "time_unix_s", "window_s", "status", "status_reason", "arrival_rps", "in_flight", "ready_replicas", "replicas", "latency", "latency_p50_s", "latency_p99_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_RPS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    time_unix_s: float
    window_s: float
    status: DataStatus
    status_reason: str
    arrival_rps: float
    in_flight: float
    ready_replicas: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaLoad]
    latency: LatencyHistogram
    latency_p50_s: float
    latency_p99_s: float
    def __init__(self, model: _Optional[str] = ..., time_unix_s: _Optional[float] = ..., window_s: _Optional[float] = ..., status: _Optional[_Union[DataStatus, str]] = ..., status_reason: _Optional[str] = ..., arrival_rps: _Optional[float] = ..., in_flight: _Optional[float] = ..., ready_replicas: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaLoad, _Mapping]]] = ..., latency: _Optional[_Union[LatencyHistogram, _Mapping]] = ..., latency_p50_s: _Optional[float] = ..., latency_p99_s: _Optional[float] = ...) -> None: ...
