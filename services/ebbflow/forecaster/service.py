"""The forecaster's shell: collector snapshots in, binned demand series, Forecasts out.

Per model and resolution (config `resolutions_s`, e.g. 10 s, 1 min, 10 min),
`arrival_rps` from each fresh LoadSnapshot is averaged into bins; a snapshot
whose load is unknown adds nothing, so a bin with no fresh data is missing
(NaN), never zero. Each completed bin goes through that series' Selector
(the pure core). Every completed bin of the finest resolution publishes a
Forecast on `ebbflow.forecast.<model>`. At start, every known model's series
is refilled from the collector's GetHistory, so a restarted forecaster
forecasts at once.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
import math
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Gauge, Histogram

from ebbflow.forecaster.selection import ForecastResult, Selector, default_models
from ebbflow.runtime import subjects, tracing
from ebbflow.runtime.bus import Bus, unsubscribe
from ebbflow.runtime.config import ForecasterConfig
from ebbflow.v1 import collector_pb2, collector_pb2_grpc, forecast_pb2, load_pb2

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)

DAY_S = 86400.0
# (times, arrival_rps) of a model at a step over [start, end): the collector's GetHistory.
HistorySource = Callable[[str, float, float, float], Awaitable[tuple[list[float], list[float]]]]


def collector_history(address: str | Callable[[], Awaitable[str]]) -> HistorySource:
    """GetHistory over gRPC from the collector at `address`, or at the address `address()` gives when asked
    (found in NATS when the forecaster refills)."""

    async def fetch(model: str, start: float, end: float, step: float) -> tuple[list[float], list[float]]:
        target = address if isinstance(address, str) else await address()
        async with grpc.aio.insecure_channel(target) as channel:
            stub = collector_pb2_grpc.CollectorServiceStub(channel)
            response = await stub.GetHistory(collector_pb2.GetHistoryRequest(model=model, start_unix_s=start, end_unix_s=end, step_s=step), timeout=10.0)
        series = {s.name: list(s.values) for s in response.series}
        return list(response.time_unix_s), series.get("arrival_rps", [])

    return fetch


class ForecasterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.forecast = Gauge("ebbflow_forecast_arrival_rps", "Forecast demand at the end of the finest resolution's horizon", ["model", "quantile"], registry=registry)
        self.relative_mae = Gauge(
            "ebbflow_forecaster_relative_mae", "Mean absolute error of published p50 forecasts over mean demand, recent targets", ["model", "resolution"], registry=registry
        )
        self.coverage = Gauge(
            "ebbflow_forecaster_coverage", "Share of recent targets at or below the published quantile forecast", ["model", "resolution", "quantile"], registry=registry
        )
        self.update_seconds = Histogram(
            "ebbflow_forecaster_update_seconds", "Time of one series update (all candidate models)", buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0), registry=registry
        )


class Bins:
    """Averages a stream of (time, value) into fixed bins aligned to multiples of step_s.

    A bin with no known value is NaN (missing, not zero); bins skipped
    entirely come out as NaN too, so the series keeps its spacing.
    """

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s
        self.current: int | None = None
        self.total = 0.0
        self.count = 0

    def add(self, time_s: float, value: float) -> list[tuple[float, float]]:
        """Add one sample; returns the bins it completed as (bin start, mean)."""
        index = math.floor(time_s / self.step_s)
        done: list[tuple[float, float]] = []
        if self.current is None:
            self.current = index
        elif index > self.current:
            done.append((self.current * self.step_s, self.total / self.count if self.count else math.nan))
            done.extend(((self.current + k) * self.step_s, math.nan) for k in range(1, min(index - self.current, 10_000)))
            self.current, self.total, self.count = index, 0.0, 0
        elif index < self.current:  # late sample for a closed bin: dropped
            return done
        if not math.isnan(value):
            self.total += value
            self.count += 1
        return done


@dataclass
class Series:
    """One model's series at one resolution."""

    step_s: float
    bins: Bins
    selector: Selector
    latest: ForecastResult | None = None
    issued_at: float = 0.0


class Forecaster:
    def __init__(self, config: ForecasterConfig, bus: Bus, history: HistorySource | None, metrics: ForecasterMetrics, known_models: Callable[[], set[str]]) -> None:
        self.config = config
        self.bus = bus
        self.history = history
        self.metrics = metrics
        self.known_models = known_models
        self.series: dict[str, list[Series]] = {}
        self.refilled = asyncio.Event()
        # Updates and refits run here, in order, so a refit never blocks the event loop (the router may share it).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecaster")

    async def _observe(self, series: Series, value: float) -> ForecastResult:
        return await asyncio.get_running_loop().run_in_executor(self._executor, series.selector.observe, value)

    def season_for(self, step_s: float) -> int:
        steps = DAY_S / step_s
        return int(round(steps)) if self.config.daily_season and steps <= 288 and float(steps).is_integer() else 0

    def selector(self, step_s: float, horizon: int | None = None, season: int | None = None) -> Selector:
        c = self.config
        horizon = horizon or c.horizon_steps
        season = self.season_for(step_s) if season is None else season
        return Selector(
            horizon=horizon,
            season=season,
            window=c.selection_window_steps,
            refit_every=c.refit_every_steps,
            max_history=c.max_history_steps,
            models=lambda: default_models(horizon, season, c.max_history_steps),
            rate_floor=1.0 / step_s,  # one arrival per bin
        )

    def series_for(self, model: str) -> list[Series]:
        """One model's series at every resolution, created on first use."""
        if model not in self.series:
            self.series[model] = [Series(step, Bins(step), self.selector(step)) for step in self.config.resolutions_s]
        return self.series[model]

    # -- history ---------------------------------------------------------------------------------

    async def refill(self, model: str, now: float) -> int:
        """Feed the model's history from the collector into every resolution; returns bins fed."""
        if self.history is None:
            return 0
        fed = 0
        for series in self.series_for(model):
            end = math.floor(now / series.step_s) * series.step_s  # complete bins only
            start = end - self.config.max_history_steps * series.step_s
            try:
                times, values = await self.history(model, start, end, series.step_s)
            except Exception as error:  # the collector may be starting too: forecast from live data only
                log.warning("refilling %s at %g s from the collector failed: %s", model, series.step_s, error)
                continue
            values_array = np.asarray(values, dtype=float)
            first_known = np.flatnonzero(~np.isnan(values_array))
            if not len(first_known):
                continue
            known = values_array[first_known[0] :]
            series.latest = await asyncio.get_running_loop().run_in_executor(self._executor, _feed, series.selector, known)
            series.issued_at = times[-1] + series.step_s
            fed += len(known)
            series.bins.current = math.floor(end / series.step_s)
        return fed

    # -- live ------------------------------------------------------------------------------------

    async def on_snapshot(self, snapshot: load_pb2.LoadSnapshot, trace_headers: dict[str, str] | None = None) -> None:
        """One snapshot into each resolution's bins; a bin it closes is forecast from (`trace_headers`: the snapshot's
        trace context, linked from the forecast's span when tracing is on)."""
        value = snapshot.arrival_rps if snapshot.status == load_pb2.DATA_STATUS_FRESH else math.nan
        for index, series in enumerate(self.series_for(snapshot.model)):
            for start, mean in series.bins.add(snapshot.time_unix_s, value):
                started = time.perf_counter()
                series.latest = await self._observe(series, mean)
                self.metrics.update_seconds.observe(time.perf_counter() - started)
                series.issued_at = start + series.step_s
                self._export(snapshot.model, series)
                if index == 0:
                    await self._publish(snapshot.model, series, trace_headers)

    def forecast_message(self, model: str, series: Series, steps: int | None = None) -> forecast_pb2.Forecast:
        result = series.latest
        steps = steps or series.selector.horizon
        quality = series.selector.quality
        message = forecast_pb2.Forecast(
            model=model,
            issued_at_unix_s=series.issued_at,
            step_s=series.step_s,
            observations=series.selector.known,
            quality=forecast_pb2.ForecastQuality(
                scored=quality.scored,
                relative_mae=_finite(quality.relative_mae),
                coverage_p90=_finite(quality.coverage(0.9)),
                coverage_p99=_finite(quality.coverage(0.99)),
            ),
        )
        if result is None:
            message.method, message.reason = "none", "no observations yet"
            message.untrusted_reason = "no observations yet"
            return message
        message.method, message.reason = result.method, result.reason
        message.untrusted_reason = result.untrusted_reason
        message.methods.extend(result.methods[:steps])
        if result.quantiles:
            message.point.extend(_floats(result.points[:steps]))
            for q, values in sorted(result.quantiles.items()):
                message.quantiles.append(forecast_pb2.QuantileSeries(quantile=q, arrival_rps=_floats(values[:steps])))
        return message

    def latest(self) -> dict[str, forecast_pb2.Forecast]:
        """Each model's latest forecast at the finest resolution."""
        return {model: self.forecast_message(model, resolutions[0]) for model, resolutions in list(self.series.items())}

    async def _publish(self, model: str, series: Series, trace_headers: dict[str, str] | None = None) -> None:
        message = self.forecast_message(model, series)
        headers = None
        if tracing.enabled():
            with TRACER.start_as_current_span("forecast", links=tracing.links(tracing.span_context_from(trace_headers))) as span:
                tracing.set_attributes(span, {"ebbflow.model": model, "ebbflow.forecast.method": message.method, "ebbflow.forecast.step_s": series.step_s})
                if message.untrusted_reason:
                    span.set_attribute("ebbflow.forecast.untrusted", message.untrusted_reason)
                headers = tracing.headers(span)
        try:
            await self.bus.nc.publish(subjects.forecast_subject(model), message.SerializeToString(), headers=headers)
        except Exception as error:  # loss-tolerant: the next bin publishes again
            log.warning("publishing the forecast of %s failed: %s", model, error)

    def _export(self, model: str, series: Series) -> None:
        resolution = f"{series.step_s:g}s"
        quality = series.selector.quality
        if quality.scored:
            self.metrics.relative_mae.labels(model, resolution).set(_finite(quality.relative_mae))
            for q in (0.9, 0.99):
                self.metrics.coverage.labels(model, resolution, f"{q:g}").set(_finite(quality.coverage(q)))
        if series is self.series[model][0] and series.latest is not None and series.latest.quantiles:
            for q, values in series.latest.quantiles.items():
                self.metrics.forecast.labels(model, f"{q:g}").set(_finite(float(values[-1])))

    async def run(self, stop: asyncio.Event) -> None:
        now = time.time()
        for model in sorted(self.known_models()):
            fed = await self.refill(model, now)
            if fed:
                log.info("forecaster refilled %s with %d bins of history", model, fed)
        self.refilled.set()

        async def on_message(msg) -> None:  # type: ignore[no-untyped-def]
            try:
                snapshot = load_pb2.LoadSnapshot.FromString(msg.data)
            except DecodeError:
                log.warning("ignoring an undecodable load snapshot on %s", msg.subject)
                return
            try:
                await self.on_snapshot(snapshot, msg.headers if tracing.enabled() else None)
            except Exception:  # one bad series must not stop the others
                log.exception("forecasting %s failed", snapshot.model)

        subscription = await self.bus.nc.subscribe(f"{subjects.LOAD}.>", cb=on_message)
        try:
            await stop.wait()
        finally:
            await unsubscribe(subscription)
            self._executor.shutdown(wait=False, cancel_futures=True)


def _feed(selector: Selector, values: np.ndarray) -> ForecastResult:
    result = None
    for value in values:
        result = selector.observe(float(value))
    assert result is not None
    return result


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -1.0


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]
