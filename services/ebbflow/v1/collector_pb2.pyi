from ebbflow.v1 import load_pb2 as _load_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetSnapshotRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetSnapshotResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[_load_pb2.LoadSnapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[_load_pb2.LoadSnapshot, _Mapping]]] = ...) -> None: ...

class WatchSnapshotsRequest(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[_load_pb2.LoadSnapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[_load_pb2.LoadSnapshot, _Mapping]]] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("model", "start_unix_s", "end_unix_s", "step_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    start_unix_s: float
    end_unix_s: float
    step_s: float
    def __init__(self, model: _Optional[str] = ..., start_unix_s: _Optional[float] = ..., end_unix_s: _Optional[float] = ..., step_s: _Optional[float] = ...) -> None: ...

class HistorySeries(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("model", "step_s", "time_unix_s", "series")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    model: str
    step_s: float
    time_unix_s: _containers.RepeatedScalarFieldContainer[float]
    series: _containers.RepeatedCompositeFieldContainer[HistorySeries]
    def __init__(self, model: _Optional[str] = ..., step_s: _Optional[float] = ..., time_unix_s: _Optional[_Iterable[float]] = ..., series: _Optional[_Iterable[_Union[HistorySeries, _Mapping]]] = ...) -> None: ...

class HistoryChunk(_message.Message):
    __slots__ = ("model", "step_s", "columns", "time_unix_s", "values", "latency_upper_bounds_s", "latency_counts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_UPPER_BOUNDS_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_COUNTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    step_s: float
    columns: _containers.RepeatedScalarFieldContainer[str]
    time_unix_s: _containers.RepeatedScalarFieldContainer[float]
    values: _containers.RepeatedScalarFieldContainer[float]
    latency_upper_bounds_s: _containers.RepeatedScalarFieldContainer[float]
    latency_counts: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, model: _Optional[str] = ..., step_s: _Optional[float] = ..., columns: _Optional[_Iterable[str]] = ..., time_unix_s: _Optional[_Iterable[float]] = ..., values: _Optional[_Iterable[float]] = ..., latency_upper_bounds_s: _Optional[_Iterable[float]] = ..., latency_counts: _Optional[_Iterable[float]] = ...) -> None: ...
