"""The scheduler's trailing windows: means over the stable and burst windows, the last hour's highest rate."""

import pytest

from ebbflow.scheduler.load_window import LoadWindow, PushWindow


def test_the_load_window_averages_the_last_window_of_snapshots():
    window = LoadWindow(30.0)
    assert window.means(0.0) is None
    # One-second snapshots of Poisson-like noise around 6 req/s: the mean is the rule's input, not the last second.
    noisy = [2, 11, 4, 9, 6, 3, 10, 5, 7, 3] * 3
    for t, rps in enumerate(noisy):
        window.add(float(t), 6.0, float(rps))
    in_flight, arrival = window.means(29.0)
    assert in_flight == 6.0 and arrival == pytest.approx(6.0)
    # Samples older than the window drop out.
    for t in range(30, 60):
        window.add(float(t), 0.0, 0.0)
    assert window.means(59.0) == (0.0, 0.0)
    assert 6.0 <= window.recent_peak_rps(59.0) <= 6.5  # the windowed rate's peak, not a single second's 11


def test_the_recent_peak_forgets_after_an_hour():
    window = LoadWindow(1.0)
    window.add(0.0, 1.0, 50.0)
    for t in range(60, 3600, 60):
        window.add(float(t), 0.0, 2.0)
    assert window.recent_peak_rps(3599.0) == 50.0
    window.add(3720.0, 0.0, 2.0)
    assert window.recent_peak_rps(3720.0) == 2.0


def test_the_push_window_averages_each_routers_pushes_over_the_burst_window():
    push = PushWindow(6.0)
    for t in range(6):
        push.add(float(t), {"llm": 2.0})
    push.add(6.0, {"llm": 20.0})  # a step: the first second moves the 6 s mean by a sixth of it
    assert push.mean("llm", 6.0) == pytest.approx((5 * 2.0 + 20.0) / 6)
    for t in range(7, 12):
        push.add(float(t), {"llm": 20.0})
    assert push.mean("llm", 11.0) == 20.0 and push.mean("other", 11.0) is None and push.heard_at() == 11.0
