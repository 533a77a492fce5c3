"""The book of writes that must land (runtime.pending): newest state per key wins, back-off on a fake clock, events in order."""

from ebbflow.runtime.pending import Event, PendingEvents, PendingWrites, RetrySettings, retry_delay_s

SETTINGS = RetrySettings(initial_s=0.5, max_s=4.0, max_events=3)


def test_a_newer_state_replaces_a_waiting_one_and_a_late_attempt_of_the_old_changes_nothing():
    book = PendingWrites(SETTINGS)
    starting = book.record("llm.a", b"STARTING", now_s=0.0)
    assert book.due(0.0) == [starting]
    ready = book.record("llm.a", b"READY", now_s=1.0)  # became ready while STARTING was still on its way
    assert book.due(1.0) == [ready]
    assert not book.landed(starting)  # the old attempt lands late: READY still waits
    assert book.failed(starting, 1.0) == 0  # ...or fails late: no back-off for READY
    assert book.due(1.0) == [ready]
    assert book.landed(ready)
    assert len(book) == 0 and book.wait_s(1.0) is None


def test_a_delete_is_a_state_like_any_other():
    book = PendingWrites(SETTINGS)
    book.record("llm.a", b"READY", 0.0)
    stopped = book.record("llm.a", None, 0.0)
    assert book.due(0.0) == [stopped] and stopped.value is None


def test_failures_back_off_per_key_doubling_to_the_cap_and_a_reconnect_makes_all_due():
    book = PendingWrites(SETTINGS)
    write = book.record("llm.a", b"READY", 0.0)
    other = book.record("llm.b", b"READY", 0.0)
    assert book.failed(write, 0.0) == 1
    assert book.due(0.0) == [other] and book.due(0.49) == [other] and book.due(0.5) == [write, other]
    now = 0.5
    for failures, wait in [(2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0)]:
        assert book.failed(write, now) == failures
        assert write not in book.due(now + wait - 0.01) and write in book.due(now + wait)
        now += wait
    book.all_due(now)
    assert book.due(now) == [write, other]
    assert book.landed(write) and book.failures("llm.a") == 0


def test_due_writes_come_in_the_order_they_were_recorded():
    book = PendingWrites(SETTINGS)
    a = book.record("m.a", b"1", 0.0)
    b = book.record("m.b", b"1", 0.0)
    a2 = book.record("m.a", b"2", 0.0)
    assert book.due(0.0) == [b, a2] and a not in book.due(0.0)


def test_events_wait_in_order_all_behind_a_failed_head_and_the_oldest_drop_beyond_the_bound():
    events = PendingEvents(SETTINGS)
    first, second = Event("s", b"1", "r:1"), Event("s", b"2", "r:2")
    events.add(first)
    events.add(second)
    assert events.head(0.0) == first
    assert events.failed(0.0) == 1
    assert events.head(0.4) is None and events.wait_s(0.0) == 0.5
    assert events.head(0.5) == first
    events.landed(first)
    assert events.head(0.5) == second  # a success clears the back-off
    for n in range(3, 6):
        events.add(Event("s", str(n).encode(), f"r:{n}"))
    assert len(events) == 3 and events.dropped == 1 and events.head(0.5).message_id == "r:3"


def test_retry_delay():
    assert [retry_delay_s(n, SETTINGS) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
