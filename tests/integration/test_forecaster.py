"""The forecaster with real parts: load through the real router, a running collector, forecasts on NATS, refill after a restart."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from ebbflow.forecaster.service import Forecaster, ForecasterMetrics, collector_history
from ebbflow.runtime import subjects
from ebbflow.runtime.config import ForecasterConfig
from ebbflow.v1 import forecast_pb2
from tests.integration.conftest import RouterBed, open_loop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# 1 s bins (the collector publishes every 0.5 s), 4 steps ahead, quick refits.
FAST = ForecasterConfig(resolutions_s=(1.0, 5.0), horizon_steps=4, refit_every_steps=20, selection_window_steps=20, max_history_steps=200, daily_season=False)


async def start_forecaster(bed: RouterBed, address: str) -> tuple[Forecaster, asyncio.Event, asyncio.Task]:
    forecaster = Forecaster(FAST, bed.bus, collector_history(address), ForecasterMetrics(CollectorRegistry()), lambda: set(bed.view.policies))
    stop = asyncio.Event()
    task = asyncio.create_task(forecaster.run(stop))
    await asyncio.wait_for(forecaster.refilled.wait(), 60)
    return forecaster, stop, task


async def test_forecasts_follow_the_collector_and_a_restart_refills_from_its_history(testbed: RouterBed, collectors) -> None:  # type: ignore[no-untyped-def]
    await testbed.replicas.start("llm")
    await testbed.policy("llm")
    router = await testbed.router()
    await testbed.wait_routable("llm", 1)
    collector, _ = await collectors()
    address = f"127.0.0.1:{collector.port}"
    forecaster, stop, task = await start_forecaster(testbed, address)

    published: list[forecast_pb2.Forecast] = []

    async def on_forecast(msg) -> None:  # type: ignore[no-untyped-def]
        published.append(forecast_pb2.Forecast.FromString(msg.data))

    subscription = await testbed.bus.nc.subscribe(subjects.forecast_subject("llm"), cb=on_forecast)
    sent_rate, errors = await open_loop(router, rate_rps=20.0, duration_s=25.0)
    assert errors == []
    await subscription.unsubscribe()

    assert len(published) >= 15, "one forecast per completed 1 s bin"
    last = published[-1]
    assert last.model == "llm" and last.step_s == 1.0 and last.method != "none"
    levels = {q.quantile: list(q.arrival_rps) for q in last.quantiles}
    assert set(levels) == {0.5, 0.9, 0.99} and all(len(v) == 4 for v in levels.values())
    assert levels[0.5][0] == pytest.approx(sent_rate, rel=0.35)
    assert all(a <= b + 1e-9 for a, b in zip(levels[0.5], levels[0.9]))
    # 25 bins: too few scored errors to calibrate, so the quantiles are the point forecast, their coverage is not
    # measured (-1), and the forecast says it must not be acted on yet.
    assert last.quality.scored > 0 and last.quality.coverage_p90 == -1 and last.untrusted_reason
    observed = forecaster.series["llm"][0].selector.known

    stop.set()
    await task
    restarted, stop, task = await start_forecaster(testbed, address)
    try:
        # Refilled from the collector's GetHistory before any new bin: it forecasts at once.
        series = restarted.series["llm"][0]
        assert series.selector.known >= observed - 3
        message = restarted.forecast_message("llm", series)
        assert message.method != "none" and message.observations == series.selector.known
        assert {q.quantile for q in message.quantiles} == {0.5, 0.9, 0.99}
    finally:
        stop.set()
        await task
