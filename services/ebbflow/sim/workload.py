"""What the simulator replays: per-request arrivals with token counts, or arrival counts per bin.

Both come from the one trace loader (ebbflow.traces). Rate scaling and the
ServeGen expansion are here, seeded and documented:

- **scale(workload, factor)**: each request becomes floor(factor) requests,
  plus one more with probability frac(factor); copies arrive at the original
  time plus a uniform jitter of up to `jitter_s` (0.5 s) either side, and
  draw their token counts from the trace's own requests. The burst shape is
  kept (every second's rate is multiplied by the factor) while the copies
  are not artificially simultaneous.
- **counts_from_rates**: a rates trace (ServeGen: mean rate per 10-min window)
  becomes arrival counts per bin. Within a window, a client whose
  inter-arrival times have mean m and coefficient of variation c is a
  renewal process: its count over a bin of width w is, by the renewal
  central limit theorem, about mean w/m and variance w c^2/m. Summed over
  clients, the bin count has mean w R and variance w sum(c_i^2 r_i), R the
  window's total rate; it is drawn per bin (seeded) from a gamma with those
  two moments and rounded. Gap windows (rate 0: collection gaps) stay gaps:
  no arrivals and not scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ebbflow.scheduler.capacity import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS
from ebbflow.traces import Trace


@dataclass(frozen=True)
class Requests:
    """Per-request arrivals (seconds from 0, sorted) and token counts."""

    name: str
    times: np.ndarray
    prompts: np.ndarray
    outputs: np.ndarray
    tokens_known: bool = True
    duration_s: float = 0.0
    """How long the trace lasts (0: until its last arrival); a split keeps the quiet end of its first part."""

    def __len__(self) -> int:
        return len(self.times)

    @property
    def span_s(self) -> float:
        if self.duration_s:
            return self.duration_s
        return float(self.times[-1]) if len(self.times) else 0.0

    def rates(self, step_s: float) -> np.ndarray:
        return self.counts(step_s) / step_s

    def counts(self, step_s: float, span_s: float | None = None) -> np.ndarray:
        """Arrivals per bin of step_s."""
        bins = int(math.ceil((span_s if span_s is not None else self.span_s) / step_s)) or 1
        return np.bincount(np.minimum((self.times // step_s).astype(np.int64), bins - 1), minlength=bins).astype(float)

    def split(self, cut_s: float) -> tuple["Requests", "Requests"]:
        """Requests before cut_s (development) and from it on (evaluation, times from 0)."""
        cut = cut_s
        k = int(np.searchsorted(self.times, cut))
        head = Requests(self.name + "[dev]", self.times[:k], self.prompts[:k], self.outputs[:k], self.tokens_known, cut)
        tail = Requests(self.name + "[eval]", self.times[k:] - cut, self.prompts[k:], self.outputs[k:], self.tokens_known, self.span_s - cut)
        return head, tail


def requests_from_trace(trace: Trace, default_prompt: int = DEFAULT_PROMPT_TOKENS, default_output: int = DEFAULT_OUTPUT_TOKENS) -> Requests:
    """A per-request trace as simulator input; missing token columns get fixed defaults (said in `tokens_known`)."""
    if trace.kind != "requests" or trace.arrivals_s is None:
        raise ValueError(f"{trace.name} is a rates trace: replay it in fluid mode")
    n = len(trace.arrivals_s)
    known = trace.prompt_tokens is not None and trace.output_tokens is not None

    def column(values: np.ndarray | None, default: int) -> np.ndarray:
        if values is None:
            return np.full(n, default, dtype=np.int64)
        return np.nan_to_num(np.asarray(values, dtype=float), nan=default).clip(0).astype(np.int64)

    return Requests(trace.name, np.asarray(trace.arrivals_s, dtype=float), column(trace.prompt_tokens, default_prompt), column(trace.output_tokens, default_output), known)


def scale(requests: Requests, factor: float, seed: int = 0, jitter_s: float = 0.5) -> Requests:
    """Multiply the arrival rate by `factor`, keeping the burst shape (see the module docstring)."""
    if factor <= 0:
        raise ValueError(f"scale factor must be > 0, got {factor}")
    if factor == 1:
        return requests
    rng = np.random.default_rng(seed)
    n = len(requests)
    copies = np.full(n, int(factor)) + (rng.random(n) < factor - int(factor))
    origin = np.repeat(np.arange(n), copies)
    first = np.concatenate(([0], np.cumsum(copies)[:-1]))
    is_original = np.zeros(len(origin), dtype=bool)
    is_original[first[copies > 0]] = True
    times = requests.times[origin] + np.where(is_original, 0.0, rng.uniform(-jitter_s, jitter_s, len(origin)))
    times = np.clip(times, 0.0, requests.span_s)
    donors = np.where(is_original, origin, rng.integers(0, n, len(origin)))
    order = np.argsort(times, kind="stable")
    return Requests(f"{requests.name}x{factor:g}", times[order], requests.prompts[donors][order], requests.outputs[donors][order], requests.tokens_known, requests.duration_s)


@dataclass(frozen=True)
class Counts:
    """Arrivals per bin (NaN where the trace has a gap) and the variability that made them."""

    name: str
    step_s: float
    counts: np.ndarray
    mix: Requests | None = None
    """A per-request trace replayed in fluid mode: a sample of its requests, whose token counts the capacity
    curves are measured with (without one, the profile's default mix)."""

    @property
    def span_s(self) -> float:
        return len(self.counts) * self.step_s

    def split(self, cut_s: float) -> tuple["Counts", "Counts"]:
        k = int(round(cut_s / self.step_s))
        head, tail = self.mix.split(k * self.step_s) if self.mix is not None else (None, None)
        return Counts(self.name + "[dev]", self.step_s, self.counts[:k], head), Counts(self.name + "[eval]", self.step_s, self.counts[k:], tail)

    def rates(self, step_s: float) -> np.ndarray:
        """req/s per bin of step_s (a multiple of this step; NaN where a whole bin is a gap)."""
        factor = max(1, int(round(step_s / self.step_s)))
        usable = len(self.counts) // factor * factor
        groups = self.counts[:usable].reshape(-1, factor)
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(groups).all(axis=1), np.nan, np.nansum(groups, axis=1) / (factor * self.step_s))


def token_mix(workload: Requests | Counts) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The prompt and output token counts to measure capacity curves with: the trace's own, also for a
    per-request trace replayed in fluid mode; none (the profile's defaults) for a rates trace."""
    requests = workload if isinstance(workload, Requests) else workload.mix
    if requests is None or not len(requests):
        return None, None
    return requests.prompts, requests.outputs


def counts_from_requests(requests: Requests, step_s: float, sample: int = 200_000, seed: int = 0) -> Counts:
    """A per-request trace as arrivals per bin, keeping a sample of its requests (seeded) for the token mix."""
    keep = np.sort(np.random.default_rng(seed).choice(len(requests), sample, replace=False)) if len(requests) > sample else np.arange(len(requests))
    mix = Requests(requests.name, requests.times[keep], requests.prompts[keep], requests.outputs[keep], requests.tokens_known, requests.span_s)
    return Counts(requests.name, step_s, requests.counts(step_s), mix)


def client_dispersion(clients_file: Path) -> np.ndarray:
    """Per window of a ServeGen per-client file: sum over clients of iat_cv^2 x rate (the count variance per second)."""
    frame = pd.read_csv(clients_file, usecols=["window_start_s", "rate_rps", "iat_cv"])
    frame["v"] = frame["iat_cv"].astype(float) ** 2 * frame["rate_rps"].astype(float)
    per_window = frame.groupby("window_start_s")["v"].sum()
    return per_window.sort_index().to_numpy(dtype=float)


def counts_from_rates(trace: Trace, step_s: float = 10.0, dispersion: np.ndarray | None = None, seed: int = 0, scale_by: float = 1.0) -> Counts:
    """Arrival counts per bin from a rates trace (see the module docstring); without `dispersion`, Poisson-like (c = 1)."""
    if trace.kind != "rates" or trace.rates is None:
        raise ValueError(f"{trace.name} is a per-request trace: bin it with Requests.counts")
    per_window = int(round(trace.rate_step_s / step_s))
    if per_window < 1 or abs(per_window * step_s - trace.rate_step_s) > 1e-9:
        raise ValueError(f"bin of {step_s:g} s does not divide the trace's {trace.rate_step_s:g} s windows")
    rates = np.asarray(trace.rates, dtype=float) * scale_by
    variance = rates.copy() if dispersion is None else np.asarray(dispersion[: len(rates)], dtype=float) * scale_by
    if len(variance) < len(rates):
        variance = np.concatenate([variance, rates[len(variance) :]])
    rng = np.random.default_rng(seed)
    mean = np.nan_to_num(np.repeat(rates, per_window) * step_s)
    var = np.repeat(np.nan_to_num(variance), per_window) * step_s
    # A gamma with that mean and variance: never negative, and its mean is the window's (a normal clipped
    # at zero would add demand where a client's CV is huge, which ServeGen has: up to sd/mean = 6 per bin).
    bursty = (mean > 0) & (var > 0)
    draws = mean.copy()
    draws[bursty] = rng.gamma(mean[bursty] ** 2 / var[bursty], var[bursty] / mean[bursty])
    counts = np.where(np.isnan(np.repeat(rates, per_window)), np.nan, np.round(draws))
    return Counts(trace.name, step_s, counts)
