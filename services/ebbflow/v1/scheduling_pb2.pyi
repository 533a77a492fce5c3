from ebbflow.v1 import forecast_pb2 as _forecast_pb2
from ebbflow.v1 import policy_pb2 as _policy_pb2
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
    __slots__ = ("instances_per_replica", "max_batch_size", "gpu_memory_gb")
    INSTANCES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    instances_per_replica: int
    max_batch_size: int
    gpu_memory_gb: float
    def __init__(self, instances_per_replica: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., gpu_memory_gb: _Optional[float] = ...) -> None: ...

class DesiredState(_message.Message):
    __slots__ = ("model", "generation", "horizontal", "vertical", "reason", "decided_at_unix_s", "traceparent")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HORIZONTAL_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    generation: int
    horizontal: HorizontalDecision
    vertical: VerticalDecision
    reason: str
    decided_at_unix_s: float
    traceparent: str
    def __init__(self, model: _Optional[str] = ..., generation: _Optional[int] = ..., horizontal: _Optional[_Union[HorizontalDecision, _Mapping]] = ..., vertical: _Optional[_Union[VerticalDecision, _Mapping]] = ..., reason: _Optional[str] = ..., decided_at_unix_s: _Optional[float] = ..., traceparent: _Optional[str] = ...) -> None: ...

class DecisionInputs(_message.Message):
    __slots__ = ("in_flight", "arrival_rps", "current_replicas", "window_recommendations", "forecast_rps", "forecast_quantile", "lead_s", "time_in_system_s", "predictive_replicas", "reactive_replicas", "policy", "fresh", "load_reason", "woken", "prior_recommendations", "prior_ages_s", "prior_time_in_system_s", "forecast_age_s", "forecast_step_s", "forecast", "initial", "wall_unix_s", "prior_panic_left_s", "capacity_key", "capacity_calibration", "capacity_note", "idle_s", "budgeted", "budget_cap", "budget_note", "vertical_note", "burst_in_flight", "forecast_untrusted_reason", "recent_peak_rps", "vertical", "largest_gpu_gb", "budget_gpus", "budget_demands")
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
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    LOAD_REASON_FIELD_NUMBER: _ClassVar[int]
    WOKEN_FIELD_NUMBER: _ClassVar[int]
    PRIOR_RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    PRIOR_AGES_S_FIELD_NUMBER: _ClassVar[int]
    PRIOR_TIME_IN_SYSTEM_S_FIELD_NUMBER: _ClassVar[int]
    FORECAST_AGE_S_FIELD_NUMBER: _ClassVar[int]
    FORECAST_STEP_S_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    WALL_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    PRIOR_PANIC_LEFT_S_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_KEY_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_NOTE_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    BUDGETED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_CAP_FIELD_NUMBER: _ClassVar[int]
    BUDGET_NOTE_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_NOTE_FIELD_NUMBER: _ClassVar[int]
    BURST_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    FORECAST_UNTRUSTED_REASON_FIELD_NUMBER: _ClassVar[int]
    RECENT_PEAK_RPS_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_FIELD_NUMBER: _ClassVar[int]
    LARGEST_GPU_GB_FIELD_NUMBER: _ClassVar[int]
    BUDGET_GPUS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_DEMANDS_FIELD_NUMBER: _ClassVar[int]
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
    policy: _policy_pb2.ScalingPolicy
    fresh: bool
    load_reason: str
    woken: bool
    prior_recommendations: _containers.RepeatedScalarFieldContainer[int]
    prior_ages_s: _containers.RepeatedScalarFieldContainer[float]
    prior_time_in_system_s: float
    forecast_age_s: float
    forecast_step_s: float
    forecast: _containers.RepeatedCompositeFieldContainer[_forecast_pb2.QuantileSeries]
    initial: bool
    wall_unix_s: float
    prior_panic_left_s: float
    capacity_key: str
    capacity_calibration: float
    capacity_note: str
    idle_s: float
    budgeted: bool
    budget_cap: int
    budget_note: str
    vertical_note: str
    burst_in_flight: float
    forecast_untrusted_reason: str
    recent_peak_rps: float
    vertical: VerticalInputs
    largest_gpu_gb: float
    budget_gpus: float
    budget_demands: _containers.RepeatedCompositeFieldContainer[BudgetDemand]
    def __init__(self, in_flight: _Optional[float] = ..., arrival_rps: _Optional[float] = ..., current_replicas: _Optional[int] = ..., window_recommendations: _Optional[_Iterable[int]] = ..., forecast_rps: _Optional[float] = ..., forecast_quantile: _Optional[float] = ..., lead_s: _Optional[float] = ..., time_in_system_s: _Optional[float] = ..., predictive_replicas: _Optional[int] = ..., reactive_replicas: _Optional[int] = ..., policy: _Optional[_Union[_policy_pb2.ScalingPolicy, _Mapping]] = ..., fresh: bool = ..., load_reason: _Optional[str] = ..., woken: bool = ..., prior_recommendations: _Optional[_Iterable[int]] = ..., prior_ages_s: _Optional[_Iterable[float]] = ..., prior_time_in_system_s: _Optional[float] = ..., forecast_age_s: _Optional[float] = ..., forecast_step_s: _Optional[float] = ..., forecast: _Optional[_Iterable[_Union[_forecast_pb2.QuantileSeries, _Mapping]]] = ..., initial: bool = ..., wall_unix_s: _Optional[float] = ..., prior_panic_left_s: _Optional[float] = ..., capacity_key: _Optional[str] = ..., capacity_calibration: _Optional[float] = ..., capacity_note: _Optional[str] = ..., idle_s: _Optional[float] = ..., budgeted: bool = ..., budget_cap: _Optional[int] = ..., budget_note: _Optional[str] = ..., vertical_note: _Optional[str] = ..., burst_in_flight: _Optional[float] = ..., forecast_untrusted_reason: _Optional[str] = ..., recent_peak_rps: _Optional[float] = ..., vertical: _Optional[_Union[VerticalInputs, _Mapping]] = ..., largest_gpu_gb: _Optional[float] = ..., budget_gpus: _Optional[float] = ..., budget_demands: _Optional[_Iterable[_Union[BudgetDemand, _Mapping]]] = ...) -> None: ...

class VerticalInputs(_message.Message):
    __slots__ = ("instances_per_replica", "max_batch_size", "in_force_instances", "in_force_max_batch_size", "candidates", "curves_unavailable")
    INSTANCES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    IN_FORCE_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    IN_FORCE_MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CURVES_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    instances_per_replica: int
    max_batch_size: int
    in_force_instances: int
    in_force_max_batch_size: int
    candidates: _containers.RepeatedCompositeFieldContainer[ShapeCurves]
    curves_unavailable: str
    def __init__(self, instances_per_replica: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., in_force_instances: _Optional[int] = ..., in_force_max_batch_size: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[ShapeCurves, _Mapping]]] = ..., curves_unavailable: _Optional[str] = ...) -> None: ...

class ShapeCurves(_message.Message):
    __slots__ = ("instances_per_replica", "max_batch_size", "capacity_key", "capacity_calibration")
    INSTANCES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_KEY_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    instances_per_replica: int
    max_batch_size: int
    capacity_key: str
    capacity_calibration: float
    def __init__(self, instances_per_replica: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., capacity_key: _Optional[str] = ..., capacity_calibration: _Optional[float] = ...) -> None: ...

class BudgetDemand(_message.Message):
    __slots__ = ("model", "priority", "replicas", "gpus_per_replica")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    model: str
    priority: int
    replicas: int
    gpus_per_replica: float
    def __init__(self, model: _Optional[str] = ..., priority: _Optional[int] = ..., replicas: _Optional[int] = ..., gpus_per_replica: _Optional[float] = ...) -> None: ...

class CapacityCurve(_message.Message):
    __slots__ = ("pool", "rates", "met", "in_flight", "ttft_s")
    POOL_FIELD_NUMBER: _ClassVar[int]
    RATES_FIELD_NUMBER: _ClassVar[int]
    MET_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    TTFT_S_FIELD_NUMBER: _ClassVar[int]
    pool: int
    rates: _containers.RepeatedScalarFieldContainer[float]
    met: _containers.RepeatedScalarFieldContainer[float]
    in_flight: _containers.RepeatedScalarFieldContainer[float]
    ttft_s: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, pool: _Optional[int] = ..., rates: _Optional[_Iterable[float]] = ..., met: _Optional[_Iterable[float]] = ..., in_flight: _Optional[_Iterable[float]] = ..., ttft_s: _Optional[_Iterable[float]] = ...) -> None: ...

class CapacityCurves(_message.Message):
    __slots__ = ("key", "profile", "shape", "slo_ttft_s", "slo_tpot_s", "slo_latency_s", "slo_percentile", "prompt_tokens", "output_tokens", "speed_factor", "ttft_levels", "curves", "max_rps", "note", "measured_at_unix_s")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SLO_TTFT_S_FIELD_NUMBER: _ClassVar[int]
    SLO_TPOT_S_FIELD_NUMBER: _ClassVar[int]
    SLO_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    SLO_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SPEED_FACTOR_FIELD_NUMBER: _ClassVar[int]
    TTFT_LEVELS_FIELD_NUMBER: _ClassVar[int]
    CURVES_FIELD_NUMBER: _ClassVar[int]
    MAX_RPS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    key: str
    profile: str
    shape: VerticalDecision
    slo_ttft_s: float
    slo_tpot_s: float
    slo_latency_s: float
    slo_percentile: float
    prompt_tokens: int
    output_tokens: int
    speed_factor: float
    ttft_levels: _containers.RepeatedScalarFieldContainer[float]
    curves: _containers.RepeatedCompositeFieldContainer[CapacityCurve]
    max_rps: float
    note: str
    measured_at_unix_s: float
    def __init__(self, key: _Optional[str] = ..., profile: _Optional[str] = ..., shape: _Optional[_Union[VerticalDecision, _Mapping]] = ..., slo_ttft_s: _Optional[float] = ..., slo_tpot_s: _Optional[float] = ..., slo_latency_s: _Optional[float] = ..., slo_percentile: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., speed_factor: _Optional[float] = ..., ttft_levels: _Optional[_Iterable[float]] = ..., curves: _Optional[_Iterable[_Union[CapacityCurve, _Mapping]]] = ..., max_rps: _Optional[float] = ..., note: _Optional[str] = ..., measured_at_unix_s: _Optional[float] = ...) -> None: ...

class ScalingDecision(_message.Message):
    __slots__ = ("model", "generation", "previous_replicas", "desired", "inputs", "advisory")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_FIELD_NUMBER: _ClassVar[int]
    model: str
    generation: int
    previous_replicas: int
    desired: DesiredState
    inputs: DecisionInputs
    advisory: bool
    def __init__(self, model: _Optional[str] = ..., generation: _Optional[int] = ..., previous_replicas: _Optional[int] = ..., desired: _Optional[_Union[DesiredState, _Mapping]] = ..., inputs: _Optional[_Union[DecisionInputs, _Mapping]] = ..., advisory: bool = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("model", "limit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    limit: int
    def __init__(self, model: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[ScalingDecision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[ScalingDecision, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "generation", "inputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    generation: int
    inputs: DecisionInputs
    def __init__(self, model: _Optional[str] = ..., generation: _Optional[int] = ..., inputs: _Optional[_Union[DecisionInputs, _Mapping]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("decision", "recomputed_replicas", "recomputed_reason", "matches", "evaluation")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTED_REASON_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    decision: ScalingDecision
    recomputed_replicas: int
    recomputed_reason: str
    matches: bool
    evaluation: bool
    def __init__(self, decision: _Optional[_Union[ScalingDecision, _Mapping]] = ..., recomputed_replicas: _Optional[int] = ..., recomputed_reason: _Optional[str] = ..., matches: bool = ..., evaluation: bool = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlannedReplica(_message.Message):
    __slots__ = ("replica_id", "gpu_slot", "state")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_SLOT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    gpu_slot: str
    state: str
    def __init__(self, replica_id: _Optional[str] = ..., gpu_slot: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class ModelPlan(_message.Message):
    __slots__ = ("model", "desired", "wanted_replicas", "priority", "gpus_per_replica", "budget_note", "replicas", "advisory")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    WANTED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    BUDGET_NOTE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_FIELD_NUMBER: _ClassVar[int]
    model: str
    desired: DesiredState
    wanted_replicas: int
    priority: int
    gpus_per_replica: float
    budget_note: str
    replicas: _containers.RepeatedCompositeFieldContainer[PlannedReplica]
    advisory: bool
    def __init__(self, model: _Optional[str] = ..., desired: _Optional[_Union[DesiredState, _Mapping]] = ..., wanted_replicas: _Optional[int] = ..., priority: _Optional[int] = ..., gpus_per_replica: _Optional[float] = ..., budget_note: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[PlannedReplica, _Mapping]]] = ..., advisory: bool = ...) -> None: ...

class GetPlanResponse(_message.Message):
    __slots__ = ("models", "nodes", "gpu_budget", "gpus_wanted", "gpus_desired", "gpus_in_use", "leader", "leading", "instance_id")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    GPU_BUDGET_FIELD_NUMBER: _ClassVar[int]
    GPUS_WANTED_FIELD_NUMBER: _ClassVar[int]
    GPUS_DESIRED_FIELD_NUMBER: _ClassVar[int]
    GPUS_IN_USE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADING_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelPlan]
    nodes: _containers.RepeatedScalarFieldContainer[str]
    gpu_budget: float
    gpus_wanted: float
    gpus_desired: float
    gpus_in_use: int
    leader: str
    leading: bool
    instance_id: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelPlan, _Mapping]]] = ..., nodes: _Optional[_Iterable[str]] = ..., gpu_budget: _Optional[float] = ..., gpus_wanted: _Optional[float] = ..., gpus_desired: _Optional[float] = ..., gpus_in_use: _Optional[int] = ..., leader: _Optional[str] = ..., leading: bool = ..., instance_id: _Optional[str] = ...) -> None: ...

class SchedulerLease(_message.Message):
    __slots__ = ("holder", "term", "lease_s", "renewed_at_unix_s")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    RENEWED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    holder: str
    term: int
    lease_s: float
    renewed_at_unix_s: float
    def __init__(self, holder: _Optional[str] = ..., term: _Optional[int] = ..., lease_s: _Optional[float] = ..., renewed_at_unix_s: _Optional[float] = ...) -> None: ...
