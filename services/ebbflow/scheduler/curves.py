"""Where the live scheduler's capacity curves come from, and how they are stored.

A model with an SLO in its policy is sized on measured curves
(scheduler.capacity). They are measured for what the model actually runs:
its emulator latency profile (the `profile` parameter of its Triton config),
its replica shape, its SLO, the emulator's time scale, and the token mix the
collector observes (mean prompt and output tokens per request, from the
replicas' token counters; before any is observed, 1024 and 128). The mix is
drawn as exponential around those means, a documented approximation of a
heavy-tailed mix.

Everything a curve is measured from makes up a `CurveSpec`; its hash is the
curve's key in the `capacity` bucket, so a restarted scheduler reuses stored
curves, and a decision records only the key (Explain reads the curves back).
When the observed mix drifts to another point of the token grid (steps of
about 41 %, 2^(1/2)), the spec changes and the curves are measured again:
that is the online update.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from ebbflow.emulator.service_time import load_profile
from ebbflow.runtime.process import die_with_parent
from ebbflow.scheduler.capacity import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS, LEVELS, CapacityModel, Curve, Curves, Shape, Slo
from ebbflow.scheduler.measure import POOLS, measure_curve
from ebbflow.v1 import scheduling_pb2

log = logging.getLogger(__name__)

MEASURE_VERSION = 2
"""Bumped when the measurement changes, so stored curves of an older method are not reused."""
POINTS = 12
REQUESTS_PER_POINT = 3000
TOKEN_SAMPLE = 4000


@dataclass(frozen=True)
class CurveSpec:
    """Everything a model's capacity curves are measured from."""

    profile: str
    instances: int
    max_batch: int
    ttft_s: float
    tpot_s: float
    latency_s: float
    percentile: float
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    speed_factor: float = 1.0

    @property
    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": MEASURE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def shape(self) -> Shape:
        return Shape(self.instances, self.max_batch)

    @property
    def slo(self) -> Slo:
        return Slo(self.ttft_s, self.tpot_s, self.latency_s, self.percentile)

    def describe(self) -> str:
        return (
            f"{self.profile}, {self.instances} instance(s) x batch {self.max_batch}, {self.slo.describe()}, "
            f"~{self.prompt_tokens}/{self.output_tokens} prompt/output tokens"
        )


def on_token_grid(mean_tokens: float) -> int:
    """The token grid point nearest `mean_tokens` (powers of 2^(1/2)), so small drifts keep the same curves."""
    return max(1, int(round(2 ** (round(2 * math.log2(max(1.0, mean_tokens))) / 2))))


TOKEN_MEMORY = 0.99
"""Per snapshot, how much of the token mix seen so far is kept (about the last 100 snapshots count)."""
MIN_TOKEN_REQUESTS = 50.0
"""Completed requests the observed token mix needs before it replaces the default one."""


@dataclass
class TokenMix:
    """A model's observed token mix: decayed sums of prompt tokens, output tokens and requests completed."""

    prompt: float = 0.0
    output: float = 0.0
    requests: float = 0.0

    def observe(self, prompt_per_s: float, output_per_s: float, requests_per_s: float, window_s: float) -> None:
        self.prompt = self.prompt * TOKEN_MEMORY + prompt_per_s * window_s
        self.output = self.output * TOKEN_MEMORY + output_per_s * window_s
        self.requests = self.requests * TOKEN_MEMORY + requests_per_s * window_s

    def on_grid(self) -> tuple[int, int]:
        """(prompt, output) mean tokens per request on the token grid; the defaults until enough are seen."""
        if self.requests < MIN_TOKEN_REQUESTS:
            return DEFAULT_PROMPT_TOKENS, DEFAULT_OUTPUT_TOKENS
        return on_token_grid(self.prompt / self.requests), on_token_grid(self.output / self.requests)


def measure(spec: CurveSpec) -> bytes:
    """Measure the spec's curves (seconds of CPU; run it in a worker process) and return them serialised."""
    rng = np.random.default_rng(0)
    prompts = np.maximum(1, np.rint(rng.exponential(spec.prompt_tokens, TOKEN_SAMPLE))).astype(np.int64)
    outputs = np.maximum(1, np.rint(rng.exponential(spec.output_tokens, TOKEN_SAMPLE))).astype(np.int64)
    curves = measure_curve(
        load_profile(spec.profile), spec.shape, spec.slo, prompts, outputs, speed_factor=spec.speed_factor,
        pools=POOLS, points=POINTS, requests_per_point=REQUESTS_PER_POINT,
    )
    return curves_to_proto(curves, spec).SerializeToString()


async def measure_in_child(spec: CurveSpec) -> bytes:
    """`measure` in a child process (`python -m ebbflow.scheduler.curves`, the spec as JSON on stdin): it holds
    a CPU for seconds and must not stall the caller's event loop. Cancelling kills the child at once."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ebbflow.scheduler.curves",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        data, errors = await child.communicate(json.dumps(asdict(spec)).encode())
    except BaseException:
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    if child.returncode != 0:
        last = errors.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {child.returncode}"]
        raise RuntimeError(f"the measuring process failed: {last[0]}")
    return data


def curves_to_proto(curves: Curves, spec: CurveSpec) -> scheduling_pb2.CapacityCurves:
    return scheduling_pb2.CapacityCurves(
        key=spec.key,
        profile=spec.profile,
        shape=scheduling_pb2.VerticalDecision(instances_per_replica=spec.instances, max_batch_size=spec.max_batch),
        slo_ttft_s=spec.ttft_s,
        slo_tpot_s=spec.tpot_s,
        slo_latency_s=spec.latency_s,
        slo_percentile=spec.percentile,
        prompt_tokens=spec.prompt_tokens,
        output_tokens=spec.output_tokens,
        speed_factor=spec.speed_factor,
        ttft_levels=LEVELS,
        curves=[
            scheduling_pb2.CapacityCurve(pool=c.pool, rates=c.rates, met=c.met, in_flight=c.in_flight, ttft_s=[v for row in c.ttft for v in row])
            for c in curves.curves
        ],
        max_rps=curves.max_rps,
        note=curves.note,
        measured_at_unix_s=time.time(),
    )


def curves_from_proto(message: scheduling_pb2.CapacityCurves) -> Curves:
    width = len(message.ttft_levels) or len(LEVELS)
    return Curves(
        Shape(message.shape.instances_per_replica, message.shape.max_batch_size),
        Slo(message.slo_ttft_s, message.slo_tpot_s, message.slo_latency_s, message.slo_percentile),
        tuple(
            Curve(
                c.pool,
                tuple(c.rates),
                tuple(c.met),
                tuple(tuple(c.ttft_s[i * width : (i + 1) * width]) for i in range(len(c.rates))),
                tuple(c.in_flight),
            )
            for c in message.curves
        ),
        message.max_rps,
        message.note,
    )


def model_from_bytes(data: bytes, calibration: float = 1.0) -> CapacityModel:
    return CapacityModel(curves_from_proto(scheduling_pb2.CapacityCurves.FromString(data)), calibration)


async def read_stored(bucket: KeyValue, key: str, calibration: float = 1.0) -> CapacityModel | None:
    """Stored curves by key, or None."""
    try:
        entry = await bucket.get(key)
    except KeyNotFoundError:
        return None
    return model_from_bytes(entry.value or b"", calibration)


class CapacityStore:
    """Curves by key: from memory, else the `capacity` bucket, else measured in a worker process (then stored).

    `get` never waits: while a curve is being read or measured it answers None with a note, and `on_ready` is
    called when it arrives (the scheduler then decides at once).
    """

    def __init__(self, bucket: KeyValue, on_ready: Callable[[], None] = lambda: None) -> None:
        self.bucket = bucket
        self.on_ready = on_ready
        # By spec (hashable), so the per-decision lookups of every shape never hash the spec's JSON.
        self._models: dict[CurveSpec, CapacityModel] = {}
        self._pending: dict[CurveSpec, asyncio.Task[None]] = {}
        self._failed: dict[CurveSpec, str] = {}
        self._measuring = asyncio.Lock()  # one measurement at a time: each holds a CPU

    def get(self, spec: CurveSpec) -> tuple[CapacityModel | None, str]:
        if spec in self._models:
            return self._models[spec], ""
        if spec in self._failed:
            return None, f"measuring the capacity curves failed: {self._failed[spec]}"
        if spec not in self._pending:
            self._pending[spec] = asyncio.create_task(self._fetch(spec), name=f"capacity {spec.key}")
        return None, f"capacity curves for {spec.describe()} are being measured"

    async def _fetch(self, spec: CurveSpec) -> None:
        key = spec.key
        try:
            model = await read_stored(self.bucket, key)
            if model is None:
                async with self._measuring:
                    started = time.monotonic()
                    data = await measure_in_child(spec)
                log.info("capacity curves for %s measured in %.1f s", spec.describe(), time.monotonic() - started)
                await self.bucket.put(key, data)
                model = model_from_bytes(data)
            self._models[spec] = model
        except Exception as error:  # keep sizing without curves, and say why
            log.exception("capacity curves for %s failed", spec.describe())
            self._failed[spec] = str(error) or type(error).__name__
        finally:
            self._pending.pop(spec, None)
            self.on_ready()

    async def close(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)


if __name__ == "__main__":  # the child of measure_in_child
    sys.stdout.buffer.write(measure(CurveSpec(**json.loads(sys.stdin.buffer.read()))))
