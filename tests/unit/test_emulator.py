"""The shared service-time model: shape of the physics, not exact numbers."""

import numpy as np
import pytest

from ebbflow.emulator.service_time import load_profile, service_time, service_times

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


@pytest.mark.parametrize("instances, speed_factor", [(1, 1.0), (4, 1.0), (2, 1 / 1.15), (3, 50.0)])
def test_batches_at_once_are_each_batch_alone_to_the_bit(instances, speed_factor):
    """service_times (the scheduler's full-batch throughput) is service_time (the simulator's and the Triton
    model's) row by row: one formula, so exact equality, not approximate."""
    rng = np.random.default_rng(0)
    prompts = rng.integers(-5, 3000, size=(500, 4))  # a negative count prefills as nothing
    outputs = rng.integers(-5, 400, size=(500, 4))
    outputs[0] = -1  # no decode step at all
    many = service_times(prompts, outputs, PROFILE, instances, speed_factor)
    for i in range(len(prompts)):
        one = service_time(prompts[i].tolist(), outputs[i].tolist(), PROFILE, instances, speed_factor)
        assert (many.total_s[i], many.ttft_s[i], many.tpot_s[i]) == (one.total_s, one.ttft_s, one.tpot_s)


def test_batches_at_once_refuse_ragged_or_flat_input():
    with pytest.raises(ValueError):
        service_times(np.ones((3, 2)), np.ones((3, 1)), PROFILE)
    with pytest.raises(ValueError):
        service_times(np.ones(3), np.ones(3), PROFILE)


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
