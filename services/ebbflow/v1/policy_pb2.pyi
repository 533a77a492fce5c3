from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoutingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTING_POLICY_UNSPECIFIED: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_LEAST_OUTSTANDING: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_POWER_OF_TWO: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_ROUND_ROBIN: _ClassVar[RoutingPolicy]

class PolicyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_MODE_UNSPECIFIED: _ClassVar[PolicyMode]
    POLICY_MODE_ACTIVE: _ClassVar[PolicyMode]
    POLICY_MODE_ADVISORY: _ClassVar[PolicyMode]
ROUTING_POLICY_UNSPECIFIED: RoutingPolicy
ROUTING_POLICY_LEAST_OUTSTANDING: RoutingPolicy
ROUTING_POLICY_POWER_OF_TWO: RoutingPolicy
ROUTING_POLICY_ROUND_ROBIN: RoutingPolicy
POLICY_MODE_UNSPECIFIED: PolicyMode
POLICY_MODE_ACTIVE: PolicyMode
POLICY_MODE_ADVISORY: PolicyMode

class ScalingPolicy(_message.Message):
    __slots__ = ("model", "min_replicas", "max_replicas", "target_in_flight_per_replica", "scale_down_delay_s", "instances_per_replica", "max_batch_size", "routing", "forecast_quantile", "lead_s", "scale_up_delay_s", "max_scale_up_step", "max_scale_up_percent", "max_scale_down_step", "max_scale_down_percent", "target_utilization", "mode", "pinned", "pin_replicas", "pin_by", "pin_reason", "pin_until_unix_s", "panic_threshold", "panic_hold_s", "slo_ttft_s", "slo_tpot_s", "slo_latency_s", "slo_percentile", "scale_to_zero_idle_s", "vertical_auto", "vertical_max_instances", "vertical_max_batch_size", "gpu_memory_gb_per_instance", "priority", "scale_tolerance", "activation_probability", "shed_in_flight_per_replica")
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
    SCALE_UP_DELAY_S_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALE_UP_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALE_UP_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALE_DOWN_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALE_DOWN_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    PIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PIN_BY_FIELD_NUMBER: _ClassVar[int]
    PIN_REASON_FIELD_NUMBER: _ClassVar[int]
    PIN_UNTIL_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    PANIC_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PANIC_HOLD_S_FIELD_NUMBER: _ClassVar[int]
    SLO_TTFT_S_FIELD_NUMBER: _ClassVar[int]
    SLO_TPOT_S_FIELD_NUMBER: _ClassVar[int]
    SLO_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    SLO_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    SCALE_TO_ZERO_IDLE_S_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_AUTO_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_MAX_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_PER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SCALE_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    SHED_IN_FLIGHT_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
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
    scale_up_delay_s: float
    max_scale_up_step: int
    max_scale_up_percent: float
    max_scale_down_step: int
    max_scale_down_percent: float
    target_utilization: float
    mode: PolicyMode
    pinned: bool
    pin_replicas: int
    pin_by: str
    pin_reason: str
    pin_until_unix_s: float
    panic_threshold: float
    panic_hold_s: float
    slo_ttft_s: float
    slo_tpot_s: float
    slo_latency_s: float
    slo_percentile: float
    scale_to_zero_idle_s: float
    vertical_auto: bool
    vertical_max_instances: int
    vertical_max_batch_size: int
    gpu_memory_gb_per_instance: float
    priority: int
    scale_tolerance: float
    activation_probability: float
    shed_in_flight_per_replica: float
    def __init__(self, model: _Optional[str] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., target_in_flight_per_replica: _Optional[float] = ..., scale_down_delay_s: _Optional[float] = ..., instances_per_replica: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., routing: _Optional[_Union[RoutingPolicy, str]] = ..., forecast_quantile: _Optional[float] = ..., lead_s: _Optional[float] = ..., scale_up_delay_s: _Optional[float] = ..., max_scale_up_step: _Optional[int] = ..., max_scale_up_percent: _Optional[float] = ..., max_scale_down_step: _Optional[int] = ..., max_scale_down_percent: _Optional[float] = ..., target_utilization: _Optional[float] = ..., mode: _Optional[_Union[PolicyMode, str]] = ..., pinned: bool = ..., pin_replicas: _Optional[int] = ..., pin_by: _Optional[str] = ..., pin_reason: _Optional[str] = ..., pin_until_unix_s: _Optional[float] = ..., panic_threshold: _Optional[float] = ..., panic_hold_s: _Optional[float] = ..., slo_ttft_s: _Optional[float] = ..., slo_tpot_s: _Optional[float] = ..., slo_latency_s: _Optional[float] = ..., slo_percentile: _Optional[float] = ..., scale_to_zero_idle_s: _Optional[float] = ..., vertical_auto: bool = ..., vertical_max_instances: _Optional[int] = ..., vertical_max_batch_size: _Optional[int] = ..., gpu_memory_gb_per_instance: _Optional[float] = ..., priority: _Optional[int] = ..., scale_tolerance: _Optional[float] = ..., activation_probability: _Optional[float] = ..., shed_in_flight_per_replica: _Optional[float] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: ScalingPolicy
    def __init__(self, policy: _Optional[_Union[ScalingPolicy, _Mapping]] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[ScalingPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[ScalingPolicy, _Mapping]]] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("policy", "update_mask", "replace", "unpin")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    UNPIN_FIELD_NUMBER: _ClassVar[int]
    policy: ScalingPolicy
    update_mask: _field_mask_pb2.FieldMask
    replace: bool
    unpin: bool
    def __init__(self, policy: _Optional[_Union[ScalingPolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., replace: bool = ..., unpin: bool = ...) -> None: ...

class SetPolicyResponse(_message.Message):
    __slots__ = ("policy", "changes")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    policy: ScalingPolicy
    changes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policy: _Optional[_Union[ScalingPolicy, _Mapping]] = ..., changes: _Optional[_Iterable[str]] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class DeletePolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImportHpaRequest(_message.Message):
    __slots__ = ("manifest", "model", "apply")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    APPLY_FIELD_NUMBER: _ClassVar[int]
    manifest: str
    model: str
    apply: bool
    def __init__(self, manifest: _Optional[str] = ..., model: _Optional[str] = ..., apply: bool = ...) -> None: ...

class ImportHpaResponse(_message.Message):
    __slots__ = ("policy", "notes", "applied")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    policy: ScalingPolicy
    notes: _containers.RepeatedScalarFieldContainer[str]
    applied: bool
    def __init__(self, policy: _Optional[_Union[ScalingPolicy, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ..., applied: bool = ...) -> None: ...
