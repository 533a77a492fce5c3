"""The shared service-time model: shape of the physics, not exact numbers."""

import pytest

from ebbflow.emulator.service_time import load_profile, service_time

PROFILE = load_profile("llama2-7b-a100")


def test_profile_cites_sources_and_loads():
    assert PROFILE.model_load_s >= 10  # a GPU cold start takes tens of seconds
    assert PROFILE.instance_throughput_scaling[0] == 1.0


def test_the_profile_carries_its_context_window():
    assert PROFILE.context_tokens == 4096  # Llama 2's context


def test_decode_dominates_and_grows_with_output_tokens():
    short = service_time([10], [10], PROFILE)
    long = service_time([10], [100], PROFILE)
    assert long.total_s > 5 * short.total_s
    assert long.tpot_s == pytest.approx(PROFILE.decode_step_base_s)


def test_batching_raises_throughput_but_slows_each_step():
    one = service_time([10], [50], PROFILE)
    eight = service_time([10] * 8, [50] * 8, PROFILE)
    assert eight.tpot_s > one.tpot_s
    assert 8 / eight.total_s > 4 / one.total_s  # batch of 8 is far more than 4x the throughput of batch 1


def test_instances_share_one_gpu_with_concave_gains():
    single = service_time([10], [50], PROFILE, instances=1)
    throughputs = [n / service_time([10], [50], PROFILE, instances=n).total_s for n in range(1, 5)]
    gains = [b - a for a, b in zip(throughputs, throughputs[1:])]
    assert all(g > 0 for g in gains)
    assert all(later < earlier for earlier, later in zip(gains, gains[1:]))
    assert throughputs[1] < 2 * (1 / single.total_s)  # two instances are not two GPUs


def test_slower_gpu_takes_longer():
    assert service_time([10], [50], PROFILE, speed_factor=0.5).total_s == pytest.approx(2 * service_time([10], [50], PROFILE).total_s)


@pytest.mark.parametrize(
    "kwargs",
    [dict(prompt_tokens=[1, 2], output_tokens=[1]), dict(prompt_tokens=[1], output_tokens=[1], speed_factor=0), dict(prompt_tokens=[1], output_tokens=[1], instances=0)],
)
def test_invalid_inputs_are_refused(kwargs):
    with pytest.raises(ValueError):
        service_time(profile=PROFILE, **kwargs)


def test_empty_batch_costs_nothing():
    assert service_time([], [], PROFILE).total_s == 0


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown latency profile 'h100-nope'"):
        load_profile("h100-nope")


def test_output_tokens_cycle_through_the_prompt():
    from ebbflow.emulator.tokens import expected_text

    assert expected_text("a b c", 5) == "a b c a b"
    assert expected_text("", 2) == "<empty> <empty>"
    assert expected_text("x", 0) == ""
