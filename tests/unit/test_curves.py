"""The live scheduler's curve specs and their stored form."""

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
