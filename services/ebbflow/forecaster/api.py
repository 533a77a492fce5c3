"""The forecaster's gRPC API: GetForecast and Backtest."""

from __future__ import annotations

import asyncio
import math

import grpc
import numpy as np

from ebbflow.forecaster.backtest import replay, score_replay
from ebbflow.forecaster.service import Forecaster
from ebbflow.v1 import forecast_pb2, forecast_pb2_grpc

MAX_BACKTEST_STEPS = 20_000


class ForecasterApi(forecast_pb2_grpc.ForecasterServiceServicer):
    def __init__(self, forecaster: Forecaster) -> None:
        self.forecaster = forecaster

    def _known(self) -> set[str]:
        return set(self.forecaster.series) | self.forecaster.known_models()

    async def _series_of(self, model: str, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        if model not in self._known():
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no series for model '{model}'; known models: {', '.join(sorted(self._known())) or 'none yet'}")
        return self.forecaster.series_for(model)

    async def GetForecast(self, request: forecast_pb2.GetForecastRequest, context: grpc.aio.ServicerContext) -> forecast_pb2.GetForecastResponse:
        if math.isnan(request.horizon_s) or request.horizon_s < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"horizon_s must be >= 0, got {request.horizon_s}")
        resolutions = await self._series_of(request.model, context)
        if request.horizon_s == 0:
            series, steps = resolutions[0], None
        else:
            reaching = [s for s in resolutions if s.step_s * s.selector.horizon >= request.horizon_s]
            if not reaching:
                longest = max(s.step_s * s.selector.horizon for s in resolutions)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"horizon_s {request.horizon_s:g} is beyond the longest forecast ({longest:g} s)")
            series = reaching[0]
            steps = math.ceil(request.horizon_s / series.step_s)
        return forecast_pb2.GetForecastResponse(forecast=self.forecaster.forecast_message(request.model, series, steps))

    async def Backtest(self, request: forecast_pb2.BacktestRequest, context: grpc.aio.ServicerContext) -> forecast_pb2.BacktestResponse:
        if bool(request.model) == bool(request.series):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give either a model the forecaster follows or an uploaded series, not both")
        if request.step_s < 0 or math.isnan(request.step_s):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"step_s must be >= 0, got {request.step_s}")
        horizon = request.horizon_steps or self.forecaster.config.horizon_steps
        if request.model:
            resolutions = await self._series_of(request.model, context)
            matching = [s for s in resolutions if not request.step_s or abs(s.step_s - request.step_s) < 1e-9]
            if not matching:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"no series at step_s {request.step_s:g}; kept: {', '.join(f'{s.step_s:g}' for s in resolutions)}"
                )
            values = np.asarray(list(matching[0].selector.history), dtype=float)
            step_s = matching[0].step_s
        else:
            values, step_s = np.asarray(request.series, dtype=float), request.step_s or self.forecaster.config.resolutions_s[0]
        if len(values) > MAX_BACKTEST_STEPS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{len(values)} steps; at most {MAX_BACKTEST_STEPS}")
        warmup = min(max(2 * horizon, 30), len(values) // 3)
        if np.count_nonzero(~np.isnan(values)) < warmup + horizon + 10:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"{np.count_nonzero(~np.isnan(values))} known steps; a backtest at horizon {horizon} needs at least {warmup + horizon + 10}"
            )
        season = request.season_steps if request.season_steps else (self.forecaster.season_for(step_s) if request.model else 0)
        selector = self.forecaster.selector(step_s, horizon, season)
        names = [c.name for c in selector.candidates] + ["selected"]
        if request.method and request.method not in names:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown method '{request.method}'; methods: {', '.join(names)}")
        forecasts, _ = await asyncio.to_thread(replay, selector, values)
        scores = score_replay(values, forecasts, range(1, horizon + 1), warmup)
        wanted = {request.method, "selected"} if request.method else set(names)
        return forecast_pb2.BacktestResponse(
            scores=[
                forecast_pb2.BacktestScore(
                    method=s.method,
                    horizon_steps=s.horizon,
                    scored=s.scored,
                    relative_mae=s.relative_mae,
                    pinball_p50=s.pinball_p50,
                    pinball_p90=s.pinball_p90,
                    coverage_p90=s.coverage_p90,
                )
                for s in scores
                if s.method in wanted
            ],
            selected_method=selector.forecast().method,
            steps=len(values),
        )
