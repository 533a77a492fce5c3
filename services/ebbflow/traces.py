"""One loader for request traces: what the forecast benchmark reads, whatever file the operator has.

Two kinds of trace come out:
- **requests**: one row per request with an arrival time (absolute datetimes,
  or numbers in s / ms / us / ns, detected or given), optionally prompt and
  output token counts; repeated timestamps are fine, rows need not be sorted;
- **rates**: request rates per fixed window. ServeGen's
  `window_start_s,total_rate_rps`, or its per-client files, summed: a window
  whose rate is exactly 0 is a collection gap (ServeGen drops windows under 10
  requests), so it is missing, not zero. Any other file with a time column and
  a rate column (`arrival_rps`, `rate_rps`, `rps`, ...; e.g. what `ebbflow
  history` writes): an empty or negative rate is missing, zero is zero.
CSV (optionally gzipped) and JSON Lines are read; column names are matched
case-insensitively against common spellings, or given explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ebbflow.runtime.errors import ConfigError

TIME_COLUMNS = (
    "timestamp", "time", "arrival_time", "arrival_timestamp", "arrival", "ts", "start_time", "created", "created_at", "request_time", "time_unix",
    "window_start",
)  # fmt: skip
RATE_COLUMNS = ("arrival_rps", "rate_rps", "total_rate_rps", "rps", "requests_per_second", "request_rate")
PROMPT_COLUMNS = ("contexttokens", "prompt_tokens", "input_tokens", "num_prompt_tokens", "prompt_len", "input_length", "request_tokens")
OUTPUT_COLUMNS = ("generatedtokens", "output_tokens", "completion_tokens", "num_output_tokens", "output_len", "output_length", "response_tokens")
UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
UNIT_SUFFIXES = ("", "_s", "_ms", "_us", "_ns")  # a time column may carry its unit (arrival_ms)
SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".json", ".ndjson")


@dataclass(frozen=True)
class Trace:
    name: str
    kind: str  # "requests" or "rates"
    # requests: arrival seconds from the first arrival, sorted; token counts when the trace has them.
    arrivals_s: np.ndarray | None = None
    prompt_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    # rates: req/s per window of rate_step_s (NaN where the window is a gap).
    rates: np.ndarray | None = None
    rate_step_s: float = 0.0
    times_read: str = ""  # which column the times came from and how they were read

    def describe(self) -> str:
        """One line on what was read, to catch a misread unit or column: kind, size, span, mean rate."""
        hours = self.span_s / 3600
        if self.kind == "requests":
            assert self.arrivals_s is not None
            rate = len(self.arrivals_s) / self.span_s if self.span_s > 0 else math.nan
            tokens = ", ".join(what for what, column in (("prompt", self.prompt_tokens), ("output", self.output_tokens)) if column is not None) or "no"
            return f"{self.name}: {len(self.arrivals_s):,} requests over {hours:.2f} h ({rate:.3g} req/s); times {self.times_read}; {tokens} token counts"
        assert self.rates is not None
        read = f"; times {self.times_read}" if self.times_read else ""
        return f"{self.name}: rates per {self.rate_step_s:g} s over {hours:.2f} h, {int(np.isnan(self.rates).sum())} of {len(self.rates)} windows missing{read}"

    @property
    def span_s(self) -> float:
        if self.kind == "requests":
            assert self.arrivals_s is not None
            return float(self.arrivals_s[-1]) if len(self.arrivals_s) else 0.0
        assert self.rates is not None
        return len(self.rates) * self.rate_step_s

    def binned(self, step_s: float) -> np.ndarray:
        """Arrival rate (req/s) per bin of step_s; rates traces can only be read at multiples of their window."""
        if self.kind == "requests":
            assert self.arrivals_s is not None
            counts = np.bincount((self.arrivals_s // step_s).astype(np.int64))
            return counts / step_s
        assert self.rates is not None
        factor = step_s / self.rate_step_s
        if abs(factor - round(factor)) > 1e-9 or factor < 1:
            raise ConfigError(f"{self.name} has rates per {self.rate_step_s:g} s; bins of {step_s:g} s cannot be made from them")
        return rebin(self.rates, int(round(factor)))


def rebin(values: np.ndarray, factor: int) -> np.ndarray:
    """Average consecutive groups of `factor` values (NaN-aware: a group with no data is NaN)."""
    usable = len(values) // factor * factor
    groups = np.asarray(values[:usable], dtype=float).reshape(-1, factor)
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(groups), axis=1)
    return np.where(counts > 0, np.nansum(groups, axis=1) / np.maximum(counts, 1), np.nan)


def _read(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    try:
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json")):
            return pd.read_json(path, lines=True)
        return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise ConfigError(f"cannot read trace {path}: {error}") from None


def _key(name: object) -> str:
    """A column name compared loosely: case, spaces, dashes and brackets do not matter ("Request tokens" = request_tokens)."""
    return "_".join("".join(c if c.isalnum() else " " for c in str(name).lower()).split())


def _column(frame: pd.DataFrame, given: str | None, candidates: tuple[str, ...], what: str, required: bool, suffixes: tuple[str, ...] = ("",)) -> str | None:
    loose = {_key(c): str(c) for c in frame.columns}
    if given:
        if given in frame.columns:
            return given
        if _key(given) in loose:
            return loose[_key(given)]
        raise ConfigError(f"no column {given!r} for {what}; the trace has: {', '.join(map(str, frame.columns))}")
    for candidate in candidates:
        for suffix in suffixes:
            if candidate + suffix in loose:
                return loose[candidate + suffix]
    if required:
        raise ConfigError(f"no {what} column found (tried {', '.join(candidates)}); name it with a flag. Columns: {', '.join(map(str, frame.columns))}")
    return None


def _unit_of(numbers: np.ndarray, column: str, requests: bool) -> tuple[str, str]:
    """The unit of numeric times, and why: the column name's suffix (t_ms), else the magnitude of epoch times,
    else seconds, unless one row per request would make a sparse trace of days (relative milliseconds)."""
    suffix = _key(column).rsplit("_", 1)
    if len(suffix) == 2 and suffix[1] in UNITS:
        return suffix[1], f"from the column name {column!r}"
    known = numbers[~np.isnan(numbers)]
    largest = float(np.max(np.abs(known))) if len(known) else 0.0
    # Epoch times: seconds ~1.7e9, ms ~1.7e12, us ~1.7e15, ns ~1.7e18; relative times are small.
    if largest > 1e11:
        unit = "ns" if largest > 1e17 else "us" if largest > 1e14 else "ms"
        return unit, "epoch time by magnitude"
    span = float(np.ptp(known)) if len(known) else 0.0
    if requests and span > 86400 and len(known) / span < 0.01:  # read as seconds: days of under one request per 100 s
        return "ms", f"as seconds they would span {span / 86400:.0f} days at {len(known) / span:.4f} req/s"
    return "s", "detected"


def _seconds(values: pd.Series, unit: str, column: str, requests: bool = True) -> tuple[np.ndarray, str]:
    """Times as seconds, row by row (NaN where a row has none; not yet sorted or shifted), and how they were
    read; `requests`: one row per request (else one per window)."""
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype=float)
        how = "given"
        if unit == "auto":
            unit, how = _unit_of(numbers, column, requests)
        if unit not in UNITS:
            raise ConfigError(f"time unit must be one of auto, {', '.join(UNITS)}; got {unit!r}")
        return numbers * UNITS[unit], f"numbers in {unit} ({how})"
    try:
        stamps = pd.to_datetime(values, format="ISO8601")
    except (ValueError, TypeError):
        try:
            stamps = pd.to_datetime(values, format="mixed")
        except (ValueError, TypeError) as error:
            raise ConfigError(f"arrival times are neither numbers nor datetimes: {error}") from None
    return (stamps - stamps.min()).dt.total_seconds().to_numpy(), "datetimes"


def load_trace(
    path: Path,
    time_column: str | None = None,
    time_unit: str = "auto",
    prompt_column: str | None = None,
    output_column: str | None = None,
) -> Trace:
    """Read one trace file (see the module docstring for what is understood)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"trace file {path} does not exist")
    frame = _read(path)
    name = path.name
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    columns = {str(c).lower() for c in frame.columns}
    if {"window_start_s", "total_rate_rps"} <= columns:
        return _rates(name, frame["window_start_s"].to_numpy(dtype=float), frame["total_rate_rps"].to_numpy(dtype=float))
    if {"window_start_s", "rate_rps", "client_id"} <= columns:
        totals = frame.groupby("window_start_s")["rate_rps"].sum()
        return _rates(name, totals.index.to_numpy(dtype=float), totals.to_numpy(dtype=float))
    time_name = _column(frame, time_column, TIME_COLUMNS, "arrival time", required=True, suffixes=UNIT_SUFFIXES)
    assert time_name is not None
    rate_name = _column(frame, None, RATE_COLUMNS, "rate", required=False)
    if rate_name:  # one row per window, e.g. `ebbflow history`: empty is missing, zero is zero
        starts, how = _seconds(frame[time_name], time_unit, time_name, requests=False)
        rates = pd.to_numeric(frame[rate_name], errors="coerce").to_numpy(dtype=float)
        known = ~np.isnan(starts)
        return _rates(name, starts[known], rates[known], zero_is_gap=False, times_read=f"column {time_name!r}: {how}; rates from {rate_name!r}")
    seconds, how = _seconds(frame[time_name], time_unit, time_name)
    # Rows with a time, in time order (stable, so repeated timestamps keep file order); tokens follow their rows.
    rows = np.flatnonzero(~np.isnan(seconds))
    if not len(rows):
        raise ConfigError("the trace has no arrival times")
    rows = rows[np.argsort(seconds[rows], kind="stable")]
    arrivals = seconds[rows] - seconds[rows[0]]

    def tokens(given: str | None, candidates: tuple[str, ...], what: str) -> np.ndarray | None:
        column = _column(frame, given, candidates, what, required=False)
        return frame[column].to_numpy(dtype=float)[rows] if column else None

    return Trace(
        name,
        "requests",
        arrivals_s=arrivals,
        prompt_tokens=tokens(prompt_column, PROMPT_COLUMNS, "prompt tokens"),
        output_tokens=tokens(output_column, OUTPUT_COLUMNS, "output tokens"),
        times_read=f"column {time_name!r}: {how}",
    )


def _rates(name: str, starts: np.ndarray, rates: np.ndarray, zero_is_gap: bool = True, times_read: str = "") -> Trace:
    if len(starts) < 2:
        raise ConfigError(f"{name}: a rates trace needs at least two windows")
    order = np.argsort(starts)
    starts, rates = starts[order], rates[order].astype(float)
    step = float(np.min(np.diff(starts)))
    if step <= 0:
        raise ConfigError(f"{name}: repeated window starts in a rates trace")
    index = np.round((starts - starts[0]) / step).astype(int)
    series = np.full(index[-1] + 1, math.nan)
    series[index] = np.where(rates > 0, rates, math.nan) if zero_is_gap else np.where(rates >= 0, rates, math.nan)
    return Trace(name, "rates", rates=series, rate_step_s=step, times_read=times_read)


def trace_files(folder: Path) -> list[Path]:
    """Every trace file under a folder; a per-client ServeGen file is skipped when its total-rate sibling exists."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
    names = {p.name for p in files}
    return [p for p in files if not (p.name.endswith("_clients.csv.gz") and p.name.replace("_clients.csv.gz", "_total_rate_10min.csv") in names)]
