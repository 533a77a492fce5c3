"""The one trace loader on generated files: formats, units, columns, gaps."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ebbflow.runtime.errors import ConfigError
from ebbflow.traces import load_trace, trace_files


def test_csv_with_datetimes_and_azure_token_columns(tmp_path: Path):
    path = tmp_path / "azure_like.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
        "2023-11-16 18:17:04.4799600,100,20\n"
        "2023-11-16 18:17:14.0000000,7,3"
    )
    trace = load_trace(path)
    assert trace.kind == "requests" and trace.name == "azure_like"
    assert trace.arrivals_s.tolist() == pytest.approx([0.0, 0.5, 10.02004])
    assert trace.prompt_tokens.tolist() == [4808, 100, 7] and trace.output_tokens.tolist() == [10, 20, 3]
    assert trace.binned(10.0).tolist() == pytest.approx([0.2, 0.1])


def test_jsonl_with_epoch_milliseconds_detected(tmp_path: Path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"arrival_time": 1.7e12 + ms, "input_tokens": 5}) for ms in (0, 250, 250, 4000)))
    trace = load_trace(path)
    assert trace.arrivals_s.tolist() == pytest.approx([0.0, 0.25, 0.25, 4.0])  # repeated timestamps kept
    assert trace.prompt_tokens.tolist() == [5, 5, 5, 5] and trace.output_tokens is None


def test_unsorted_relative_seconds_with_a_named_column_and_unit(tmp_path: Path):
    path = tmp_path / "relative.csv"
    path.write_text("t_ms,other\n3000,1\n1000,2\n2000,3\n")
    trace = load_trace(path, time_column="t_ms", time_unit="ms")
    assert trace.arrivals_s.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ConfigError, match="no arrival time column found"):
        load_trace(path)
    with pytest.raises(ConfigError, match="no column 'nope'"):
        load_trace(path, time_column="nope")


def test_burstgpt_style_columns_with_spaces_are_found(tmp_path: Path):
    path = _write(
        tmp_path / "burst.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,472,18,490,Conversation log\n45,GPT-4,1087,250,1337,API log\n",
    )
    trace = load_trace(path)
    assert trace.arrivals_s.tolist() == [0.0, 40.0]
    assert trace.prompt_tokens.tolist() == [472, 1087] and trace.output_tokens.tolist() == [18, 250]
    assert "'Timestamp': numbers in s" in trace.describe()


def test_relative_milliseconds_are_told_from_seconds(tmp_path: Path):
    # Mooncake-style: integer milliseconds from the start, an hour of 3 req/s. Read as seconds that would be
    # 42 days at 0.003 req/s; a day of relative seconds at a plausible rate stays seconds.
    rng = np.random.default_rng(0)
    ms = np.sort(rng.integers(0, 3_600_000, 10_800))
    path = tmp_path / "mooncake.jsonl"
    path.write_text("\n".join(json.dumps({"timestamp": int(t), "input_length": 100, "output_length": 7}) for t in ms))
    trace = load_trace(path)
    assert trace.span_s == pytest.approx((ms[-1] - ms[0]) / 1000)
    assert "numbers in ms" in trace.describe() and "3 req/s" in trace.describe()
    seconds = _write(tmp_path / "seconds.csv", "ts\n" + "\n".join(str(t) for t in range(0, 2 * 86400, 60)))
    assert load_trace(seconds).span_s == pytest.approx(2 * 86400 - 60)
    named = _write(tmp_path / "named.csv", "arrival_time_us\n0\n1500000\n")  # the column name says the unit
    assert load_trace(named).arrivals_s.tolist() == [0.0, 1.5]
    assert load_trace(named, time_unit="ms").arrivals_s.tolist() == [0.0, 1500.0]  # a given unit wins


def test_a_rate_per_row_file_such_as_ebbflow_history_is_a_rates_trace_where_zero_is_zero(tmp_path: Path):
    path = _write(tmp_path / "history.csv", "time_unix_s,arrival_rps,latency_p99_s\n1764430000,2.5,0.1\n1764430010,0,0.1\n1764430020,,\n1764430040,4,0.2\n")
    trace = load_trace(path)
    assert trace.kind == "rates" and trace.rate_step_s == 10
    assert trace.rates[:2].tolist() == [2.5, 0.0] and np.isnan(trace.rates[2:4]).all() and trace.rates[4] == 4.0  # empty and absent rows: missing
    assert "rates from 'arrival_rps'" in trace.describe()


def test_rate_traces_treat_zero_windows_as_gaps_and_rebin(tmp_path: Path):
    total = tmp_path / "servegen_x_total_rate_10min.csv"
    total.write_text("window_start_s,total_rate_rps,active_clients\n0,10.0,3\n600,0.0,0\n1200,30.0,4\n1800,20.0,4\n")
    trace = load_trace(total)
    assert trace.kind == "rates" and trace.rate_step_s == 600
    assert math.isnan(trace.rates[1]) and trace.rates[2] == 30.0
    assert trace.binned(1200.0).tolist() == [10.0, 25.0]
    with pytest.raises(ConfigError, match="cannot be made"):
        trace.binned(900.0)
    clients = tmp_path / "servegen_x_clients.csv.gz"
    import pandas as pd

    pd.DataFrame({"client_id": [1, 2, 1, 2], "window_start_s": [0, 0, 600, 600], "rate_rps": [1.0, 2.0, 0.0, 0.0]}).to_csv(clients, index=False)
    summed = load_trace(clients)
    assert summed.rates[0] == 3.0 and math.isnan(summed.rates[1])
    assert trace_files(tmp_path) == [total]  # the per-client file is skipped beside its total


def test_unreadable_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_trace(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp\nyesterday-ish\nnot a time\n")
    with pytest.raises(ConfigError, match="neither numbers nor datetimes"):
        load_trace(bad)
    assert np.isfinite(load_trace(_write(tmp_path / "ok.csv", "ts\n5\n")).span_s)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
