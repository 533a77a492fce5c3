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
    __slots__ = ("replica_id", "address", "status", "in_system", "queued", "pending_requests", "batch_efficiency", "inference_rps", "age_s", "status_reason", "request_rps", "failure_rps", "prompt_tokens_per_s", "generated_tokens_per_s", "kv_cache_usage", "gpu_utilization", "gpu_memory_used_bytes", "gpu_memory_total_bytes", "gpus", "cpu_utilization", "cpu_memory_used_bytes", "counter_resets")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IN_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_EFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_RPS_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_RPS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RPS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    CPU_MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    COUNTER_RESETS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    address: str
    status: DataStatus
    in_system: float
    queued: float
    pending_requests: float
    batch_efficiency: float
    inference_rps: float
    age_s: float
    status_reason: str
    request_rps: float
    failure_rps: float
    prompt_tokens_per_s: float
    generated_tokens_per_s: float
    kv_cache_usage: float
    gpu_utilization: float
    gpu_memory_used_bytes: float
    gpu_memory_total_bytes: float
    gpus: int
    cpu_utilization: float
    cpu_memory_used_bytes: float
    counter_resets: int
    def __init__(self, replica_id: _Optional[str] = ..., address: _Optional[str] = ..., status: _Optional[_Union[DataStatus, str]] = ..., in_system: _Optional[float] = ..., queued: _Optional[float] = ..., pending_requests: _Optional[float] = ..., batch_efficiency: _Optional[float] = ..., inference_rps: _Optional[float] = ..., age_s: _Optional[float] = ..., status_reason: _Optional[str] = ..., request_rps: _Optional[float] = ..., failure_rps: _Optional[float] = ..., prompt_tokens_per_s: _Optional[float] = ..., generated_tokens_per_s: _Optional[float] = ..., kv_cache_usage: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., gpu_memory_used_bytes: _Optional[float] = ..., gpu_memory_total_bytes: _Optional[float] = ..., gpus: _Optional[int] = ..., cpu_utilization: _Optional[float] = ..., cpu_memory_used_bytes: _Optional[float] = ..., counter_resets: _Optional[int] = ...) -> None: ...

class WindowLoad(_message.Message):
    __slots__ = ("window_s", "intervals", "fresh_intervals", "arrival_rps", "in_flight", "latency", "latency_p50_s", "latency_p90_s", "latency_p99_s", "ready_replicas_min", "ready_replicas_max", "in_system", "queued", "pending_requests", "batch_efficiency", "inference_rps", "prompt_tokens_per_s", "generated_tokens_per_s", "gpu_utilization", "replicas")
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    FRESH_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_RPS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P90_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_S_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_MIN_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_MAX_FIELD_NUMBER: _ClassVar[int]
    IN_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_EFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_RPS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    window_s: float
    intervals: int
    fresh_intervals: int
    arrival_rps: float
    in_flight: float
    latency: LatencyHistogram
    latency_p50_s: float
    latency_p90_s: float
    latency_p99_s: float
    ready_replicas_min: int
    ready_replicas_max: int
    in_system: float
    queued: float
    pending_requests: float
    batch_efficiency: float
    inference_rps: float
    prompt_tokens_per_s: float
    generated_tokens_per_s: float
    gpu_utilization: float
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaLoad]
    def __init__(self, window_s: _Optional[float] = ..., intervals: _Optional[int] = ..., fresh_intervals: _Optional[int] = ..., arrival_rps: _Optional[float] = ..., in_flight: _Optional[float] = ..., latency: _Optional[_Union[LatencyHistogram, _Mapping]] = ..., latency_p50_s: _Optional[float] = ..., latency_p90_s: _Optional[float] = ..., latency_p99_s: _Optional[float] = ..., ready_replicas_min: _Optional[int] = ..., ready_replicas_max: _Optional[int] = ..., in_system: _Optional[float] = ..., queued: _Optional[float] = ..., pending_requests: _Optional[float] = ..., batch_efficiency: _Optional[float] = ..., inference_rps: _Optional[float] = ..., prompt_tokens_per_s: _Optional[float] = ..., generated_tokens_per_s: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., replicas: _Optional[_Iterable[_Union[ReplicaLoad, _Mapping]]] = ...) -> None: ...

class LoadSnapshot(_message.Message):
    __slots__ = ("model", "time_unix_s", "window_s", "status", "status_reason", "arrival_rps", "in_flight", "ready_replicas", "replicas", "latency", "latency_p50_s", "latency_p99_s", "latency_p90_s", "in_system", "queued", "pending_requests", "batch_efficiency", "inference_rps", "prompt_tokens_per_s", "generated_tokens_per_s", "gpu_utilization", "stale_replicas", "windows")
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
    LATENCY_P90_S_FIELD_NUMBER: _ClassVar[int]
    IN_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_EFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_RPS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    STALE_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
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
    latency_p90_s: float
    in_system: float
    queued: float
    pending_requests: float
    batch_efficiency: float
    inference_rps: float
    prompt_tokens_per_s: float
    generated_tokens_per_s: float
    gpu_utilization: float
    stale_replicas: int
    windows: _containers.RepeatedCompositeFieldContainer[WindowLoad]
    def __init__(self, model: _Optional[str] = ..., time_unix_s: _Optional[float] = ..., window_s: _Optional[float] = ..., status: _Optional[_Union[DataStatus, str]] = ..., status_reason: _Optional[str] = ..., arrival_rps: _Optional[float] = ..., in_flight: _Optional[float] = ..., ready_replicas: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaLoad, _Mapping]]] = ..., latency: _Optional[_Union[LatencyHistogram, _Mapping]] = ..., latency_p50_s: _Optional[float] = ..., latency_p99_s: _Optional[float] = ..., latency_p90_s: _Optional[float] = ..., in_system: _Optional[float] = ..., queued: _Optional[float] = ..., pending_requests: _Optional[float] = ..., batch_efficiency: _Optional[float] = ..., inference_rps: _Optional[float] = ..., prompt_tokens_per_s: _Optional[float] = ..., generated_tokens_per_s: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., stale_replicas: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[WindowLoad, _Mapping]]] = ...) -> None: ...
