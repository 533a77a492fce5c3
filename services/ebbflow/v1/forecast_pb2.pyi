from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QuantileSeries(_message.Message):
    __slots__ = ("quantile", "arrival_rps")
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_RPS_FIELD_NUMBER: _ClassVar[int]
    quantile: float
    arrival_rps: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, quantile: _Optional[float] = ..., arrival_rps: _Optional[_Iterable[float]] = ...) -> None: ...

class Forecast(_message.Message):
    __slots__ = ("model", "issued_at_unix_s", "step_s", "quantiles", "method", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    issued_at_unix_s: float
    step_s: float
    quantiles: _containers.RepeatedCompositeFieldContainer[QuantileSeries]
    method: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., issued_at_unix_s: _Optional[float] = ..., step_s: _Optional[float] = ..., quantiles: _Optional[_Iterable[_Union[QuantileSeries, _Mapping]]] = ..., method: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
