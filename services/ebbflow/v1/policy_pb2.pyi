from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ScalingPolicy(_message.Message):
    __slots__ = ("model", "min_replicas", "max_replicas", "target_in_flight_per_replica", "scale_down_delay_s", "instances_per_replica", "max_batch_size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TARGET_IN_FLIGHT_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    SCALE_DOWN_DELAY_S_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    min_replicas: int
    max_replicas: int
    target_in_flight_per_replica: float
    scale_down_delay_s: float
    instances_per_replica: int
    max_batch_size: int
    def __init__(self, model: _Optional[str] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., target_in_flight_per_replica: _Optional[float] = ..., scale_down_delay_s: _Optional[float] = ..., instances_per_replica: _Optional[int] = ..., max_batch_size: _Optional[int] = ...) -> None: ...
