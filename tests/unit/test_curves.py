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
