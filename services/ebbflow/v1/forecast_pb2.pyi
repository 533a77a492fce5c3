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

class ForecastQuality(_message.Message):
    __slots__ = ("scored", "relative_mae", "coverage_p90", "coverage_p99")
    SCORED_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_MAE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_P90_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_P99_FIELD_NUMBER: _ClassVar[int]
    scored: int
    relative_mae: float
    coverage_p90: float
    coverage_p99: float
    def __init__(self, scored: _Optional[int] = ..., relative_mae: _Optional[float] = ..., coverage_p90: _Optional[float] = ..., coverage_p99: _Optional[float] = ...) -> None: ...

class Forecast(_message.Message):
    __slots__ = ("model", "issued_at_unix_s", "step_s", "quantiles", "method", "reason", "methods", "point", "observations", "quality", "untrusted_reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    UNTRUSTED_REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    issued_at_unix_s: float
    step_s: float
    quantiles: _containers.RepeatedCompositeFieldContainer[QuantileSeries]
    method: str
    reason: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    point: _containers.RepeatedScalarFieldContainer[float]
    observations: int
    quality: ForecastQuality
    untrusted_reason: str
    def __init__(self, model: _Optional[str] = ..., issued_at_unix_s: _Optional[float] = ..., step_s: _Optional[float] = ..., quantiles: _Optional[_Iterable[_Union[QuantileSeries, _Mapping]]] = ..., method: _Optional[str] = ..., reason: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., point: _Optional[_Iterable[float]] = ..., observations: _Optional[int] = ..., quality: _Optional[_Union[ForecastQuality, _Mapping]] = ..., untrusted_reason: _Optional[str] = ...) -> None: ...

class GetForecastRequest(_message.Message):
    __slots__ = ("model", "horizon_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    horizon_s: float
    def __init__(self, model: _Optional[str] = ..., horizon_s: _Optional[float] = ...) -> None: ...

class GetForecastResponse(_message.Message):
    __slots__ = ("forecast",)
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    forecast: Forecast
    def __init__(self, forecast: _Optional[_Union[Forecast, _Mapping]] = ...) -> None: ...

class BacktestRequest(_message.Message):
    __slots__ = ("model", "series", "step_s", "method", "horizon_steps", "season_steps")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HORIZON_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEASON_STEPS_FIELD_NUMBER: _ClassVar[int]
    model: str
    series: _containers.RepeatedScalarFieldContainer[float]
    step_s: float
    method: str
    horizon_steps: int
    season_steps: int
    def __init__(self, model: _Optional[str] = ..., series: _Optional[_Iterable[float]] = ..., step_s: _Optional[float] = ..., method: _Optional[str] = ..., horizon_steps: _Optional[int] = ..., season_steps: _Optional[int] = ...) -> None: ...

class BacktestScore(_message.Message):
    __slots__ = ("method", "horizon_steps", "scored", "relative_mae", "pinball_p50", "pinball_p90", "coverage_p90")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HORIZON_STEPS_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_MAE_FIELD_NUMBER: _ClassVar[int]
    PINBALL_P50_FIELD_NUMBER: _ClassVar[int]
    PINBALL_P90_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_P90_FIELD_NUMBER: _ClassVar[int]
    method: str
    horizon_steps: int
    scored: int
    relative_mae: float
    pinball_p50: float
    pinball_p90: float
    coverage_p90: float
    def __init__(self, method: _Optional[str] = ..., horizon_steps: _Optional[int] = ..., scored: _Optional[int] = ..., relative_mae: _Optional[float] = ..., pinball_p50: _Optional[float] = ..., pinball_p90: _Optional[float] = ..., coverage_p90: _Optional[float] = ...) -> None: ...

class BacktestResponse(_message.Message):
    __slots__ = ("scores", "selected_method", "steps")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SELECTED_METHOD_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[BacktestScore]
    selected_method: str
    steps: int
    def __init__(self, scores: _Optional[_Iterable[_Union[BacktestScore, _Mapping]]] = ..., selected_method: _Optional[str] = ..., steps: _Optional[int] = ...) -> None: ...
