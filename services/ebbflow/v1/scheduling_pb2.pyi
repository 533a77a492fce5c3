from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HorizontalDecision(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    def __init__(self, replicas: _Optional[int] = ...) -> None: ...

class VerticalDecision(_message.Message):
    __slots__ = ("instances_per_replica", "max_batch_size")
    INSTANCES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    instances_per_replica: int
    max_batch_size: int
    def __init__(self, instances_per_replica: _Optional[int] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class DesiredState(_message.Message):
    __slots__ = ("model", "generation", "horizontal", "vertical", "reason", "decided_at_unix_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HORIZONTAL_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    generation: int
    horizontal: HorizontalDecision
    vertical: VerticalDecision
    reason: str
    decided_at_unix_s: float
    def __init__(self, model: _Optional[str] = ..., generation: _Optional[int] = ..., horizontal: _Optional[_Union[HorizontalDecision, _Mapping]] = ..., vertical: _Optional[_Union[VerticalDecision, _Mapping]] = ..., reason: _Optional[str] = ..., decided_at_unix_s: _Optional[float] = ...) -> None: ...

class DecisionInputs(_message.Message):
    __slots__ = ("in_flight", "arrival_rps", "current_replicas", "window_recommendations", "forecast_rps", "forecast_quantile", "lead_s", "time_in_system_s", "predictive_replicas", "reactive_replicas")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_RPS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    FORECAST_RPS_FIELD_NUMBER: _ClassVar[int]
    FORECAST_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    LEAD_S_FIELD_NUMBER: _ClassVar[int]
    TIME_IN_SYSTEM_S_FIELD_NUMBER: _ClassVar[int]
    PREDICTIVE_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REACTIVE_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    in_flight: float
    arrival_rps: float
    current_replicas: int
    window_recommendations: _containers.RepeatedScalarFieldContainer[int]
    forecast_rps: float
    forecast_quantile: float
    lead_s: float
    time_in_system_s: float
    predictive_replicas: int
    reactive_replicas: int
    def __init__(self, in_flight: _Optional[float] = ..., arrival_rps: _Optional[float] = ..., current_replicas: _Optional[int] = ..., window_recommendations: _Optional[_Iterable[int]] = ..., forecast_rps: _Optional[float] = ..., forecast_quantile: _Optional[float] = ..., lead_s: _Optional[float] = ..., time_in_system_s: _Optional[float] = ..., predictive_replicas: _Optional[int] = ..., reactive_replicas: _Optional[int] = ...) -> None: ...

class ScalingDecision(_message.Message):
    __slots__ = ("model", "generation", "previous_replicas", "desired", "inputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    generation: int
    previous_replicas: int
    desired: DesiredState
    inputs: DecisionInputs
    def __init__(self, model: _Optional[str] = ..., generation: _Optional[int] = ..., previous_replicas: _Optional[int] = ..., desired: _Optional[_Union[DesiredState, _Mapping]] = ..., inputs: _Optional[_Union[DecisionInputs, _Mapping]] = ...) -> None: ...
