from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoutingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTING_POLICY_UNSPECIFIED: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_LEAST_OUTSTANDING: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_POWER_OF_TWO: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_ROUND_ROBIN: _ClassVar[RoutingPolicy]
ROUTING_POLICY_UNSPECIFIED: RoutingPolicy
ROUTING_POLICY_LEAST_OUTSTANDING: RoutingPolicy
ROUTING_POLICY_POWER_OF_TWO: RoutingPolicy
ROUTING_POLICY_ROUND_ROBIN: RoutingPolicy

class ScalingPolicy(_message.Message):
    __slots__ = ("model", "min_replicas", "max_replicas", "target_in_flight_per_replica", "scale_down_delay_s", "instances_per_replica", "max_batch_size", "routing", "forecast_quantile", "lead_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TARGET_IN_FLIGHT_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    SCALE_DOWN_DELAY_S_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    FORECAST_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    LEAD_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    min_replicas: int
    max_replicas: int
    target_in_flight_per_replica: float
    scale_down_delay_s: float
    instances_per_replica: int
    max_batch_size: int
    routing: RoutingPolicy
    forecast_quantile: float
    lead_s: float
    def __init__(self, model: _Optional[str] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., target_in_flight_per_replica: _Optional[float] = ..., scale_down_delay_s: _Optional[float] = ..., instances_per_replica: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., routing: _Optional[_Union[RoutingPolicy, str]] = ..., forecast_quantile: _Optional[float] = ..., lead_s: _Optional[float] = ...) -> None: ...
