"""The live scheduler's curve specs, their stored form and their measurement."""

import ast
from pathlib import Path

import pytest

from ebbflow.scheduler.capacity import Curve, Curves, Shape, Slo
from ebbflow.scheduler.curves import CurveSpec, curves_from_proto, curves_to_proto, on_token_grid

SPEC = CurveSpec(profile="llama2-7b-a100", instances=1, max_batch=8, ttft_s=2.0, tpot_s=0.0, latency_s=0.0, percentile=99.0)


def test_stored_curves_read_back_identical():
    curves = Curves(
        Shape(1, 8),
        Slo(ttft_s=2.0, percentile=99.0),
        (
            Curve(1, (0.1, 0.2), (1.0, 0.97), ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6), (0.2, 0.4, 0.6, 0.8, 1.0, 1.2)), (0.3, 0.9)),
            Curve(4, (0.1, 0.2), (1.0, 0.99), ((0.1,) * 6, (0.3,) * 6), (0.2, 0.7)),
        ),
        max_rps=0.4,
        note="test",
    )
    assert curves_from_proto(curves_to_proto(curves, SPEC)) == curves


def test_the_key_changes_with_anything_the_curves_are_measured_from():
    from dataclasses import replace

    variants = [replace(SPEC, max_batch=4), replace(SPEC, ttft_s=1.0), replace(SPEC, prompt_tokens=2048), replace(SPEC, speed_factor=10.0)]
    assert len({SPEC.key, *(v.key for v in variants)}) == 5
    assert replace(SPEC).key == SPEC.key


def test_small_drifts_of_the_token_mix_stay_on_the_same_grid_point():
    assert on_token_grid(1000) == on_token_grid(1100) == 1024
    assert on_token_grid(1500) != 1024
    assert on_token_grid(0) == 1


def _flat_model(rate_at_slo: float, shape: Shape):
    """A capacity model whose every pool meets the SLO up to `rate_at_slo` req/s per replica."""
    from ebbflow.scheduler.capacity import CapacityModel

    rates = (rate_at_slo / 2, rate_at_slo, rate_at_slo * 1.5)
    curve = lambda pool: Curve(pool, rates, (1.0, 0.99, 0.5), ((0.1,) * 6,) * 3, (0.5, 1.0, 3.0))  # noqa: E731
    return CapacityModel(Curves(shape, Slo(ttft_s=2.0, percentile=99.0), (curve(1), curve(32)), rate_at_slo * 2))


def test_the_cheapest_shape_in_gpus_wins_and_ties_keep_the_shape_in_force():
    from ebbflow.scheduler.capacity import choose_shape

    small, big, wide = Shape(1, 4), Shape(1, 16), Shape(2, 16)
    models = {small: _flat_model(1.0, small), big: _flat_model(3.0, big), wide: _flat_model(4.5, wide)}
    whole_gpu = lambda shape: 1.0  # noqa: E731
    chosen, why = choose_shape(models, small, 9.0, whole_gpu)
    assert chosen == wide and "2 GPUs, 9 as 1x4" in why  # 9 rps: 9 small, 3 big or 2 wide replicas
    chosen, _ = choose_shape(models, small, 0.5, whole_gpu)
    assert chosen == small, "one replica of any shape: no change"
    # When an instance takes memory, a second instance makes the replica dearer: big wins over wide.
    per_instance = lambda shape: 0.25 * shape.instances  # noqa: E731
    chosen, _ = choose_shape(models, small, 9.0, per_instance)
    assert chosen == big


def test_vertical_auto_sizes_the_shape_for_the_forecast_peak_when_it_is_above_the_current_rate():
    from dataclasses import replace
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from ebbflow.policy import ModelPolicy
    from ebbflow.runtime.config import SchedulerConfig
    from ebbflow.runtime.registry import RegistryView
    from ebbflow.runtime.triton import default_model_repository, read_model_configs
    from ebbflow.scheduler.core import ForecastView, LoadView
    from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
    from ebbflow.scheduler.vertical import choose_vertical

    view = RegistryView()
    view.model_configs.update(read_model_configs(default_model_repository()))
    scheduler = Scheduler(SchedulerConfig(), SimpleNamespace(capacity=None, leases=None), view, SchedulerMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    policy = scheduler.resolved("llm", ModelPolicy(model="llm", slo_ttft_s=2.0, vertical_auto=True, vertical_max_instances=1, vertical_max_batch_size=2))
    rates = {Shape(1, 1): 1.0, Shape(1, 2): 3.0}  # batch 2 buys throughput, one replica of either serves 0.5 rps
    for shape, rate in rates.items():
        spec, _ = scheduler.curve_spec("llm", replace(policy, instances_per_replica=shape.instances, max_batch_size=shape.max_batch))
        scheduler.capacity._models[spec] = _flat_model(rate, shape)
    quiet = LoadView(True, 0.5, 0.5)
    shaped, why = choose_vertical(scheduler.shape_inputs("llm", policy, None), quiet, lead_s=30.0, now_s=100.0)
    assert (shaped.instances_per_replica, shaped.max_batch_size) == (1, 1), why  # in force: policy 1 x 8 -> the cheapest tie, 1 x 1
    surge = ForecastView(issued_s=95.0, step_s=10.0, quantiles={0.9: (0.6, 6.0, 6.0)})
    shaped, why = choose_vertical(scheduler.shape_inputs("llm", policy, None), LoadView(True, 0.5, 0.5, forecast=surge), lead_s=30.0, now_s=100.0)
    assert (shaped.instances_per_replica, shaped.max_batch_size) == (1, 2) and "6.00 rps" in why, why


def test_a_faster_emulator_is_measured_over_as_many_requests_and_scales_exactly():
    """At time scale 1/50 every duration shrinks 50x: the curves are the unscaled ones with rates x50 and
    TTFT /50, measured in the same time (before, a fixed 180 s minimum run made them 50x the work)."""
    from ebbflow.emulator.service_time import load_profile
    from ebbflow.scheduler.measure import measure_curve

    profile = load_profile("llama2-7b-a100")
    kwargs = dict(pools=(1, 4), points=6, requests_per_point=600)
    slow = measure_curve(profile, Shape(1, 8), Slo(ttft_s=100.0, percentile=99.0), **kwargs)
    fast = measure_curve(profile, Shape(1, 8), Slo(ttft_s=2.0, percentile=99.0), speed_factor=50.0, **kwargs)
    for a, b in zip(slow.curves, fast.curves, strict=True):
        assert [round(r * 50, 6) for r in a.rates] == [round(r, 6) for r in b.rates]
        assert a.met == pytest.approx(b.met, abs=1e-9)
        assert [t / 50 for t in a.ttft[0]] == pytest.approx(list(b.ttft[0]), rel=1e-6)


def test_a_cancelled_measurement_kills_its_process_at_once():
    import asyncio
    import time

    import psutil

    from ebbflow.scheduler.curves import measure_in_child

    before = {child.pid for child in psutil.Process().children()}  # other tests' servers may be running

    async def cancel_early() -> tuple[psutil.Process, float]:
        task = asyncio.create_task(measure_in_child(SPEC))
        await asyncio.sleep(0.5)
        (child,) = [c for c in psutil.Process().children() if c.pid not in before]  # the measurement's process
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return child, time.monotonic() - started

    child, seconds = asyncio.run(cancel_early())
    assert seconds < 1.0 and not child.is_running()


def test_a_measurement_in_a_child_returns_the_spec_s_curves():
    import asyncio

    from ebbflow.scheduler.curves import measure_in_child, model_from_bytes

    model = model_from_bytes(asyncio.run(measure_in_child(SPEC)))
    assert model.curves.shape == Shape(1, 8) and model.curves.slo == SPEC.slo and len(model.curves.curves) == 6


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_the_scheduler_and_the_emulator_import_nothing_of_the_simulator():
    """The simulator runs the scheduler's policies, so it imports the scheduler; the other way round would be a
    cycle. Curves are measured on the emulator's pool (emulator.pool), which the simulator replays fleets on."""
    root = Path(__file__).parents[2] / "services" / "ebbflow"
    for path in [*(root / "scheduler").glob("*.py"), *(root / "emulator").glob("*.py")]:
        simulator = {name for name in imported_modules(path) if name == "ebbflow.sim" or name.startswith("ebbflow.sim.")}
        assert not simulator, f"{path.relative_to(root)} imports {simulator}"

