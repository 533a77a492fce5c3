"""Service time of one batch on an emulated LLM replica.

This is the ONE formula that the Triton model (deploy/model-repository/llm),
the simulator and the scheduler's capacity measurement all call, so the
physics they assume cannot drift apart: `service_time` for one batch,
`service_times` for many batches of one size at once (numpy, for the
scheduler's full-batch throughput). Both evaluate the same private
`_batch_time`, so they agree to the last bit. Pure: no clock, no I/O beyond
loading a profile file by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Sequence, TypeVar

import numpy as np


@dataclass(frozen=True)
class Profile:
    """Latency profile of one model on one GPU type (see the profile file for sources)."""

    name: str
    prefill_base_s: float
    """Fixed cost of a prefill pass, seconds."""
    prefill_s_per_token: float
    """Prefill cost per prompt token, seconds."""
    decode_step_base_s: float
    """One decode step for a single sequence, seconds."""
    decode_step_s_per_extra_sequence: float
    """Extra decode-step time per additional sequence in the batch, seconds."""
    model_load_s: float
    """Cold start: process start to model ready, seconds."""
    kv_cache_tokens: int
    """KV-cache capacity of one replica, tokens."""
    instance_throughput_scaling: tuple[float, ...]
    """Replica throughput with n instances relative to one instance, n = 1, 2, ..."""
    context_tokens: int
    """Longest prompt the model accepts, tokens (its context window); a longer one is refused, never served."""

    def throughput_scaling(self, instances: int) -> float:
        """Relative throughput with `instances` concurrent model instances (concave, flat past the table)."""
        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        table = self.instance_throughput_scaling
        return table[min(instances, len(table)) - 1]


@dataclass(frozen=True)
class ServiceTime:
    """How long a batch occupies one model instance, in emulated (unscaled) seconds."""

    total_s: float
    ttft_s: float
    """Time to first token: prefill of the batch plus one decode step."""
    tpot_s: float
    """Time per output token after the first."""


def load_profile(name: str) -> Profile:
    """Load a bundled profile by name (a file in ebbflow/emulator/profiles/)."""
    path = resources.files("ebbflow.emulator") / "profiles" / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"unknown latency profile {name!r}: no file {name}.json in ebbflow/emulator/profiles") from None
    return Profile(
        name=raw["name"],
        prefill_base_s=float(raw["prefill_base_s"]),
        prefill_s_per_token=float(raw["prefill_s_per_token"]),
        decode_step_base_s=float(raw["decode_step_base_s"]),
        decode_step_s_per_extra_sequence=float(raw["decode_step_s_per_extra_sequence"]),
        model_load_s=float(raw["model_load_s"]),
        kv_cache_tokens=int(raw["kv_cache_tokens"]),
        instance_throughput_scaling=tuple(float(x) for x in raw["instance_throughput_scaling"]),
        context_tokens=int(raw["context_tokens"]),
    )


Seconds = TypeVar("Seconds", float, np.ndarray)


def _batch_time(prompt_total: Seconds, longest_output: Seconds, batch: int, slowdown: float, profile: Profile) -> tuple[Seconds, Seconds, float]:
    """(total, TTFT, TPOT) of batches of `batch` requests, from their prompt tokens summed and their longest
    output: the one formula, on Python numbers or numpy arrays alike (the same operations in the same order)."""
    prefill_s = profile.prefill_base_s + profile.prefill_s_per_token * prompt_total
    step_s = profile.decode_step_base_s + profile.decode_step_s_per_extra_sequence * (batch - 1)
    total_s = (prefill_s + longest_output * step_s) * slowdown
    ttft_s = (prefill_s + step_s * (longest_output > 0)) * slowdown
    return total_s, ttft_s, step_s * slowdown


def _slowdown(profile: Profile, instances: int, speed_factor: float) -> float:
    """How much longer a batch takes than on one instance alone at the profile's speed."""
    return instances / profile.throughput_scaling(instances) / speed_factor


def _check_speed(speed_factor: float) -> None:
    if speed_factor <= 0:
        raise ValueError(f"speed_factor must be > 0, got {speed_factor}")


def service_time(
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    profile: Profile,
    instances: int = 1,
    speed_factor: float = 1.0,
) -> ServiceTime:
    """Service time of one batch: request i has prompt_tokens[i] and output_tokens[i].

    The batch is prefilled together, then decoded in lock-step until its
    longest request is done (a Triton batch, not continuous batching). With n
    instances sharing the GPU each instance runs at scaling(n)/n of full speed,
    so the replica's total throughput follows the profile's concave curve.
    speed_factor < 1 models a slower GPU.
    """
    if len(prompt_tokens) != len(output_tokens):
        raise ValueError("prompt_tokens and output_tokens must have one entry per request")
    _check_speed(speed_factor)
    batch = len(prompt_tokens)
    if batch == 0:
        return ServiceTime(0.0, 0.0, 0.0)
    slowdown = _slowdown(profile, instances, speed_factor)
    total_s, ttft_s, tpot_s = _batch_time(sum(max(0, p) for p in prompt_tokens), max(max(output_tokens), 0), batch, slowdown, profile)
    return ServiceTime(total_s=total_s, ttft_s=ttft_s, tpot_s=tpot_s)


@dataclass(frozen=True)
class ServiceTimes:
    """`ServiceTime` of many batches, one entry per batch, emulated (unscaled) seconds."""

    total_s: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray


def service_times(
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    profile: Profile,
    instances: int = 1,
    speed_factor: float = 1.0,
) -> ServiceTimes:
    """`service_time` of each row of (batches x batch size) token arrays, vectorised: row i is one batch."""
    prompts, outputs = np.asarray(prompt_tokens), np.asarray(output_tokens)
    if prompts.ndim != 2 or prompts.shape != outputs.shape:
        raise ValueError(f"prompt_tokens and output_tokens must be (batches x batch size) arrays of one shape, got {prompts.shape} and {outputs.shape}")
    _check_speed(speed_factor)
    batches, batch = prompts.shape
    if batch == 0:
        return ServiceTimes(np.zeros(batches), np.zeros(batches), np.zeros(batches))
    slowdown = _slowdown(profile, instances, speed_factor)
    total_s, ttft_s, tpot_s = _batch_time(np.maximum(prompts, 0).sum(axis=1), np.maximum(outputs.max(axis=1), 0), batch, slowdown, profile)
    return ServiceTimes(total_s, ttft_s, np.full(batches, tpot_s))
