"""History rings, windows, resampling and persistence round trips, with a fake clock."""

import math

import numpy as np
import pytest

from ebbflow.collector.history import MAX_POINTS, HistoryError, ModelHistory, Ring, Rows, from_chunk, row, to_chunk

BOUNDS = (0.01, 0.1, 1.0)


def rows(times, values_of, latency_of=lambda t: (0, 0, 0, 0)) -> Rows:
    times = list(times)
    return Rows(
        np.array(times, dtype=float),
        np.array([row(values_of(t), 1.0) for t in times]),
        np.array([latency_of(t) for t in times], dtype=np.float32),
    )


def history(**kw) -> ModelHistory:
    settings = dict(step_s=1.0, fine_keep_s=120.0, coarse_step_s=10.0, keep_s=1000.0, bounds=BOUNDS) | kw
    return ModelHistory(**settings)


def test_ring_keeps_the_newest_rows_in_order():
    ring = Ring(5, 4)
    ring.append(rows(range(8), lambda t: {"arrival_rps": t}))
    assert ring.rows().times.tolist() == [3, 4, 5, 6, 7]
    assert ring.first_time == 3 and ring.last_time == 7
    assert ring.last(2).times.tolist() == [6, 7]


def test_windows_average_fresh_rows_only():
    h = history()
    h.add(rows(range(0, 60), lambda t: {"fresh": 1.0, "arrival_rps": 10.0 if t < 50 else 40.0, "ready_replicas": 1 if t < 55 else 2}))
    h.add(rows(range(60, 62), lambda t: {"fresh": 0.0, "arrival_rps": 0.0, "ready_replicas": 2}))  # unknown, not zero
    w = h.window(now_s=62.0, window_s=12.0)
    assert w.intervals == 12 and w.fresh_intervals == 10
    assert w.values["arrival_rps"] == pytest.approx(40.0)
    assert (w.ready_min, w.ready_max) == (1, 2)


def test_latency_counts_merge_over_a_window():
    h = history()
    h.add(rows(range(10), lambda t: {"fresh": 1.0}, lambda t: (1, 0, 0, 0) if t < 9 else (0, 0, 0, 5)))
    w = h.window(10.0, 10.0)
    assert w.latency.tolist() == [9, 0, 0, 5]


def test_query_resamples_and_marks_missing_steps_nan():
    h = history()
    h.add(rows(range(100, 130), lambda t: {"fresh": 1.0, "arrival_rps": float(t % 2), "in_system": 2.0}, lambda t: (3, 1, 0, 0)))
    times, series, step = h.query(90.0, 130.0, 10.0)
    assert step == 10.0 and times.tolist() == [90, 100, 110, 120]
    assert math.isnan(series["arrival_rps"][0])
    assert series["arrival_rps"][1:].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert series["fresh"][1:].tolist() == [1.0, 1.0, 1.0]
    assert series["latency_p50_s"][1] == 0.01 and series["latency_p99_s"][1] == 0.1
    assert math.isnan(series["latency_p50_s"][0])


def test_coarse_rows_roll_up_and_answer_beyond_the_fine_retention():
    h = history(fine_keep_s=30.0)
    completed = Rows.concat(*(h.add(rows([t], lambda t: {"fresh": 1.0, "arrival_rps": float(t // 10)})) for t in range(0, 100)))
    assert completed.times.tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]  # the 90s are still in progress
    assert h.fine.first_time == 70  # fine rows older than 30 s are gone
    times, series, step = h.query(0.0, 100.0, 10.0)
    assert series["arrival_rps"].tolist() == pytest.approx(list(range(10)))
    times, series, step = h.query(0.0, 100.0, 0.0)  # finest stored for the range
    assert step == 10.0


def test_query_steps_start_at_multiples_of_the_step_as_stored_rows_do():
    h = history(fine_keep_s=30.0)
    for t in range(0, 100):
        h.add(rows([t], lambda t: {"fresh": 1.0, "arrival_rps": float(t // 10)}))
    times, series, _ = h.query(23.0, 100.0, 10.0)  # "the last 77 s": the coarse row of 20-30 s keeps its label
    assert times.tolist() == [20, 30, 40, 50, 60, 70, 80, 90]
    assert series["arrival_rps"].tolist() == pytest.approx([2, 3, 4, 5, 6, 7, 8, 9])


def test_query_refuses_what_it_cannot_answer():
    h = history()
    with pytest.raises(HistoryError, match="after start"):
        h.query(10.0, 10.0, 1.0)
    with pytest.raises(HistoryError, match=str(MAX_POINTS)):
        h.query(0.0, 1e6, 1.0)


def test_chunks_round_trip_and_restore_a_history():
    h = history(fine_keep_s=30.0)
    fine, coarse = [], []
    for t in range(0, 100):
        new = rows([t], lambda t: {"fresh": 1.0, "arrival_rps": float(t // 10)}, lambda t: (t, 0, 0, 1))
        fine.append(new)
        coarse.append(h.add(new))
    fine_back = from_chunk(to_chunk("llm", 1.0, Rows.concat(*fine), BOUNDS), BOUNDS)
    coarse_back = from_chunk(to_chunk("llm", 10.0, Rows.concat(*coarse), BOUNDS), BOUNDS)
    restored = history(fine_keep_s=30.0)
    restored.restore(fine_back, coarse_back)
    for step in (1.0, 10.0):
        a, b = h.query(0.0, 100.0, step)[1], restored.query(0.0, 100.0, step)[1]
        for name in a:
            assert np.array_equal(a[name], b[name], equal_nan=True), (step, name)
    # The coarse step in progress continues after the restore.
    more = rows([100], lambda t: {"fresh": 1.0, "arrival_rps": 9.0})
    assert h.add(more).times.tolist() == restored.add(more).times.tolist() == [90]


def test_a_chunk_from_another_layout_keeps_what_it_can():
    chunk = to_chunk("llm", 1.0, rows([0, 1], lambda t: {"fresh": 1.0, "arrival_rps": 3.0}), BOUNDS)
    del chunk.latency_upper_bounds_s[:]
    back = from_chunk(chunk, BOUNDS)
    assert back.latency.sum() == 0 and back.values[0, 1] == 3.0
