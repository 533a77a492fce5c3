"""Load history: numpy ring buffers of per-interval rows, windows over them, and resampling.

Each collector interval adds one row per model: the snapshot's numbers and
the router latency histogram. Two tiers keep memory bounded: fine rows (one
per interval) for `fine_keep_s`, and coarse rows (one per `coarse_step_s`,
aggregated from the fine ones) for `keep_s`. Everything here is pure: time is
an argument, and the collector's shell persists the rows (HistoryChunk) and
feeds them back after a restart.

Router quantities (arrival_rps, in_flight, latency) exist only where the
router telemetry was fresh: they are averaged over fresh rows only, and
`fresh` records which fraction of the time that was. A step without any row
is NaN, never zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ebbflow.v1 import collector_pb2, load_pb2

COLUMNS = (
    "fresh",
    "arrival_rps",
    "in_flight",
    "ready_replicas",
    "in_system",
    "queued",
    "pending_requests",
    "batch_efficiency",
    "inference_rps",
    "prompt_tokens_per_s",
    "generated_tokens_per_s",
    "gpu_utilization",
)
# Rows carry their duration so rows of both tiers average correctly together.
_DURATION = "duration_s"
STORED = COLUMNS + (_DURATION,)
COLUMN = {name: index for index, name in enumerate(STORED)}
ROUTER_COLUMNS = ("arrival_rps", "in_flight")
QUANTILES = {"latency_p50_s": 0.5, "latency_p90_s": 0.9, "latency_p99_s": 0.99}
SERIES = ("arrival_rps", "in_flight", "ready_replicas", *QUANTILES, *COLUMNS[4:], "fresh")
MAX_POINTS = 11_000


class HistoryError(ValueError):
    """A history request that cannot be answered as asked."""


@dataclass(frozen=True)
class Rows:
    """Rows in time order: start times, stored columns, latency histogram counts."""

    times: np.ndarray
    values: np.ndarray
    latency: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    @staticmethod
    def empty(buckets: int) -> Rows:
        return Rows(np.empty(0), np.empty((0, len(STORED))), np.empty((0, buckets), dtype=np.float32))

    def since(self, start_s: float) -> Rows:
        keep = self.times >= start_s
        return Rows(self.times[keep], self.values[keep], self.latency[keep])

    def before(self, end_s: float) -> Rows:
        keep = self.times < end_s
        return Rows(self.times[keep], self.values[keep], self.latency[keep])

    @staticmethod
    def concat(*parts: Rows) -> Rows:
        return Rows(
            np.concatenate([p.times for p in parts]),
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.latency for p in parts]),
        )


def row(values: Mapping[str, float], duration_s: float) -> np.ndarray:
    """One stored row from named values (missing ones are NaN, except fresh which is 0)."""
    out = np.full(len(STORED), np.nan)
    for name, value in values.items():
        out[COLUMN[name]] = value
    if math.isnan(out[COLUMN["fresh"]]):
        out[COLUMN["fresh"]] = 0.0
    out[COLUMN[_DURATION]] = duration_s
    return out


def snapshot_row(snapshot: load_pb2.LoadSnapshot, interval_s: float, buckets: int) -> Rows:
    """One interval's history row from its LoadSnapshot (every column but `fresh` is a snapshot field)."""
    values = {name: float(getattr(snapshot, name)) for name in COLUMNS if name != "fresh"}
    values["fresh"] = 1.0 if snapshot.status == load_pb2.DATA_STATUS_FRESH else 0.0
    latency = np.zeros(buckets, dtype=np.float32)
    counts = list(snapshot.latency.counts)[:buckets]
    latency[: len(counts)] = counts
    return Rows(np.array([snapshot.time_unix_s - interval_s]), row(values, interval_s)[None, :], latency[None, :])


class Ring:
    """A fixed-capacity ring of rows; the oldest fall off."""

    def __init__(self, capacity: int, buckets: int) -> None:
        self.capacity = max(1, capacity)
        self._times = np.zeros(self.capacity)
        self._values = np.zeros((self.capacity, len(STORED)))
        self._latency = np.zeros((self.capacity, buckets), dtype=np.float32)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, rows: Rows) -> None:
        for time_s, values, latency in zip(rows.times[-self.capacity :], rows.values[-self.capacity :], rows.latency[-self.capacity :]):
            self._times[self._next] = time_s
            self._values[self._next] = values
            self._latency[self._next] = latency
            self._next = (self._next + 1) % self.capacity
            self._size = min(self._size + 1, self.capacity)

    def rows(self) -> Rows:
        """Every row, oldest first (copies)."""
        order = (np.arange(self._size) + self._next - self._size) % self.capacity
        return Rows(self._times[order], self._values[order], self._latency[order])

    def last(self, count: int) -> Rows:
        count = min(count, self._size)
        order = (np.arange(count) + self._next - count) % self.capacity
        return Rows(self._times[order], self._values[order], self._latency[order])

    @property
    def first_time(self) -> float:
        return float(self._times[(self._next - self._size) % self.capacity]) if self._size else math.inf

    @property
    def last_time(self) -> float:
        return float(self._times[(self._next - 1) % self.capacity]) if self._size else -math.inf


def aggregate(rows: Rows, start_s: float, step_s: float, steps: int) -> Rows:
    """Rows bucketed into `steps` steps of `step_s` from `start_s`: duration-weighted means.

    Router columns average fresh time only; `fresh` becomes the fresh
    fraction; latency counts add up. Steps without rows are NaN.
    """
    buckets = rows.latency.shape[1]
    index = np.floor((rows.times - start_s) / step_s).astype(np.int64) if len(rows) else np.empty(0, dtype=np.int64)
    inside = (index >= 0) & (index < steps)
    index, values, latency = index[inside], rows.values[inside], rows.latency[inside]
    duration = np.nan_to_num(values[:, COLUMN[_DURATION]])
    fresh_time = duration * np.nan_to_num(values[:, COLUMN["fresh"]])

    def weighted(column: np.ndarray, weight: np.ndarray) -> np.ndarray:
        known = ~np.isnan(column)
        total = np.bincount(index, weights=np.where(known, column * weight, 0.0), minlength=steps)
        weights = np.bincount(index, weights=np.where(known, weight, 0.0), minlength=steps)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(weights > 0, total / np.where(weights > 0, weights, 1.0), np.nan)

    out = np.full((steps, len(STORED)), np.nan)
    for name in COLUMNS:
        weight = fresh_time if name in ROUTER_COLUMNS else duration
        out[:, COLUMN[name]] = weighted(values[:, COLUMN[name]], weight)
    out[:, COLUMN[_DURATION]] = np.bincount(index, weights=duration, minlength=steps)
    summed = np.zeros((steps, buckets), dtype=np.float32)
    np.add.at(summed, index, latency)
    return Rows(start_s + step_s * np.arange(steps), out, summed)


def quantiles(latency: np.ndarray, quantile: float, bounds: np.ndarray) -> np.ndarray:
    """Per row, the upper bound of the bucket holding the quantile (as runtime.wire.histogram_quantile); NaN when empty."""
    total = latency.sum(axis=1)
    cumulative = np.cumsum(latency, axis=1)
    index = np.argmax(cumulative >= (quantile * total)[:, None], axis=1)
    upper = np.append(bounds, bounds[-1])
    return np.where(total > 0, upper[index], np.nan)


@dataclass(frozen=True)
class WindowStats:
    """A model's load over a trailing window (what WindowLoad carries, replicas aside)."""

    window_s: float
    intervals: int
    fresh_intervals: int
    values: Mapping[str, float]
    latency: np.ndarray
    ready_min: int
    ready_max: int


class ModelHistory:
    """One model's history in two tiers."""

    def __init__(self, step_s: float, fine_keep_s: float, coarse_step_s: float, keep_s: float, bounds: tuple[float, ...]) -> None:
        self.step_s = step_s
        self.coarse_step_s = coarse_step_s
        self.bounds = np.asarray(bounds)
        self.buckets = len(bounds) + 1
        self.fine = Ring(math.ceil(fine_keep_s / step_s), self.buckets)
        self.coarse = Ring(math.ceil(keep_s / coarse_step_s), self.buckets)
        self._pending = Rows.empty(self.buckets)

    def add(self, rows: Rows) -> Rows:
        """Add fine rows; returns the coarse rows this completed (for persisting)."""
        if not len(rows):
            return Rows.empty(self.buckets)
        self.fine.append(rows)
        self._pending = Rows.concat(self._pending, rows)
        return self._roll_up(complete_before=math.floor(rows.times[-1] / self.coarse_step_s) * self.coarse_step_s)

    def _roll_up(self, complete_before: float) -> Rows:
        done = self._pending.before(complete_before)
        if not len(done):
            return Rows.empty(self.buckets)
        self._pending = self._pending.since(complete_before)
        first = math.floor(done.times[0] / self.coarse_step_s) * self.coarse_step_s
        steps = round((complete_before - first) / self.coarse_step_s)
        coarse = aggregate(done, first, self.coarse_step_s, steps)
        keep = coarse.values[:, COLUMN[_DURATION]] > 0
        coarse = Rows(coarse.times[keep], coarse.values[keep], coarse.latency[keep])
        self.coarse.append(coarse)
        return coarse

    def restore(self, fine: Rows, coarse: Rows) -> None:
        """Refill from persisted rows (each in time order), as after a restart."""
        self.coarse.append(coarse)
        self.fine.append(fine)
        self._pending = fine.since(self.coarse.last_time + self.coarse_step_s) if len(self.coarse) else fine

    def window(self, now_s: float, window_s: float) -> WindowStats:
        rows = self.fine.last(math.ceil(window_s / self.step_s) + 1).since(now_s - window_s)
        if not len(rows):
            return WindowStats(window_s, 0, 0, {name: 0.0 for name in COLUMNS}, np.zeros(self.buckets, dtype=np.float32), 0, 0)
        summary = aggregate(rows, now_s - window_s, window_s, 1)
        ready = np.nan_to_num(rows.values[:, COLUMN["ready_replicas"]])
        return WindowStats(
            window_s=window_s,
            intervals=len(rows),
            fresh_intervals=int(np.count_nonzero(rows.values[:, COLUMN["fresh"]] > 0)),
            values={name: float(np.nan_to_num(summary.values[0, COLUMN[name]])) for name in COLUMNS},
            latency=summary.latency[0],
            ready_min=int(ready.min()),
            ready_max=int(ready.max()),
        )

    def query(self, start_s: float, end_s: float, step_s: float) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        """(step start times, series by name, step used) for [start_s, end_s)."""
        if not end_s > start_s:
            raise HistoryError(f"end ({end_s}) must be after start ({start_s})")
        if step_s < 0 or math.isnan(step_s):
            raise HistoryError(f"step must be >= 0 s, got {step_s}")
        span = end_s - start_s
        if step_s == 0:
            finest = self.step_s if start_s >= self.fine.first_time else self.coarse_step_s
            step_s = max(finest, span / MAX_POINTS)
        # Steps start at multiples of the step, as stored rows do: a grid from "now - 10 min" put each stored minute
        # into the step before it, up to a step early.
        start_s = math.floor(start_s / step_s) * step_s
        steps = math.ceil((end_s - start_s) / step_s)
        if steps > MAX_POINTS:
            raise HistoryError(f"{steps} points asked for; at most {MAX_POINTS}: use a larger step or a shorter range")
        if step_s < self.coarse_step_s:
            cut = self.fine.first_time
        else:
            cut = self.coarse.last_time + self.coarse_step_s if len(self.coarse) else -math.inf
        rows = Rows.concat(self.coarse.rows().before(cut), self.fine.rows().since(cut)).since(start_s).before(end_s)
        sampled = aggregate(rows, start_s, step_s, steps)
        series = {name: sampled.values[:, COLUMN[name]] for name in COLUMNS}
        for name, quantile in QUANTILES.items():
            series[name] = quantiles(sampled.latency, quantile, self.bounds)
        return sampled.times, {name: series[name] for name in SERIES}, step_s


def to_chunk(model: str, step_s: float, rows: Rows, bounds: tuple[float, ...]) -> collector_pb2.HistoryChunk:
    return collector_pb2.HistoryChunk(
        model=model,
        step_s=step_s,
        columns=STORED,
        time_unix_s=rows.times.tolist(),
        values=rows.values.ravel().tolist(),
        latency_upper_bounds_s=bounds,
        latency_counts=rows.latency.ravel().tolist(),
    )


def from_chunk(chunk: collector_pb2.HistoryChunk, bounds: tuple[float, ...]) -> Rows:
    """Rows of a persisted chunk, columns matched by name; a histogram with other buckets is dropped."""
    count, width = len(chunk.time_unix_s), len(chunk.columns)
    stored = np.asarray(chunk.values, dtype=float).reshape(count, width) if width else np.empty((count, 0))
    values = np.full((count, len(STORED)), np.nan)
    for source, name in enumerate(chunk.columns):
        if name in COLUMN:
            values[:, COLUMN[name]] = stored[:, source]
    values[:, COLUMN["fresh"]] = np.nan_to_num(values[:, COLUMN["fresh"]])
    buckets = len(bounds) + 1
    if tuple(chunk.latency_upper_bounds_s) == tuple(bounds) and len(chunk.latency_counts) == count * buckets:
        latency = np.asarray(chunk.latency_counts, dtype=np.float32).reshape(count, buckets)
    else:
        latency = np.zeros((count, buckets), dtype=np.float32)
    return Rows(np.asarray(chunk.time_unix_s, dtype=float), values, latency)
