"""Reconcile: desired count vs actual replicas; when to consolidate; the crash-loop back-off."""

import re

import pytest

from ebbflow.actuator.backoff import BackoffSettings, CrashState, allowed_starts, delay_s, describe, record_failure, record_ready, settle
from ebbflow.actuator.core import MOVE_WINDOW_S, ActualReplica, MoveSnapshot, Phase, choose_move, live_routers, reconcile, routers_idle
from ebbflow.runtime.config import parse_config
from ebbflow.runtime.errors import ConfigError
from ebbflow.placement import Placed, parse_node


def replica(rid: str, phase: Phase, started: float = 0.0) -> ActualReplica:
    return ActualReplica(rid, phase, started)


def test_in_sync_does_nothing():
    assert reconcile(2, [replica("a", Phase.READY), replica("b", Phase.STARTING)]).empty


def test_starts_what_is_missing_and_ignores_replicas_on_their_way_out():
    actions = reconcile(3, [replica("a", Phase.READY), replica("b", Phase.DRAINING), replica("c", Phase.FAILED)])
    assert actions.start == 2 and actions.drain == ()


def test_drains_starting_first_then_newest_ready():
    actual = [replica("old", Phase.READY, 1.0), replica("new", Phase.READY, 5.0), replica("boot", Phase.STARTING, 9.0)]
    assert reconcile(1, actual).drain == ("boot", "new")


def test_zero_desired_drains_everything():
    assert set(reconcile(0, [replica("a", Phase.READY), replica("b", Phase.READY, 2.0)]).drain) == {"a", "b"}


def test_a_drain_waits_for_live_routers_only_and_for_them_to_be_idle():
    seen = {"r1": 10.0, "r2": 9.5, "gone": 5.0}
    routers = live_routers(seen, now_s=11.0)
    assert routers == {"r1", "r2"}
    assert not routers_idle(routers, {"r1": True})
    assert not routers_idle(routers, {"r1": True, "r2": False})
    assert routers_idle(routers, {"r1": True, "r2": True, "gone": False})
    assert routers_idle(set(), {})


# ---- consolidation (a fake clock: `now_s` is just a number) -------------------------------------------------------

TWO_GPUS = [parse_node("local:2x80")]
HALF_FULL = (Placed("m/a", "m", ("local", 0), 30.0), Placed("n/b", "n", ("local", 1), 20.0))


def quiet(now_s: float, placed: tuple[Placed, ...] = HALF_FULL) -> MoveSnapshot:
    return MoveSnapshot(now_s, placed, in_sync=True, settled=True)


def test_a_quiet_fragmented_fleet_moves_the_least_used_gpus_replica_onto_another():
    choice, recent = choose_move(quiet(100.0), (), TWO_GPUS, max_moves_per_hour=2)
    assert choice.move == (HALF_FULL[1], ("local", 0)) and "local/gpu1 to local/gpu0" in choice.reason
    assert recent == ()  # the caller adds the move's start once it has started


@pytest.mark.parametrize(
    "snapshot, nodes, max_moves, why",
    [
        (MoveSnapshot(0.0, HALF_FULL, in_sync=False, settled=True), TWO_GPUS, 2, "not in sync"),
        (MoveSnapshot(0.0, HALF_FULL, in_sync=True, settled=False), TWO_GPUS, 2, "starting, stopping, reloading or moving"),
        (quiet(0.0), [], 2, "no GPU inventory"),
        (quiet(0.0), TWO_GPUS, 0, "switched off"),
        (quiet(0.0, (Placed("m/a", "m", ("local", 0), 50.0), Placed("n/b", "n", ("local", 1), 50.0))), TWO_GPUS, 2, "no GPU can be emptied"),
    ],
)
def test_no_move_unless_the_fleet_is_quiet_and_a_gpu_can_be_emptied(snapshot, nodes, max_moves, why):
    choice, _ = choose_move(snapshot, (), nodes, max_moves)
    assert choice.move is None and why in choice.reason


def test_at_most_max_moves_per_hour_and_moves_older_than_the_hour_are_forgotten():
    earlier = (10.0, 20.0)
    choice, recent = choose_move(quiet(1000.0), earlier, TWO_GPUS, max_moves_per_hour=2)
    assert choice.move is None and "2 moves in the last hour" in choice.reason and recent == earlier
    choice, recent = choose_move(quiet(10.0 + MOVE_WINDOW_S + 1), earlier, TWO_GPUS, max_moves_per_hour=2)
    assert choice.move is not None and recent == (20.0,)


# ---- crash-loop back-off (a fake clock: `now` is just a number) --------------------------------------------------

SETTINGS = BackoffSettings(initial_s=10.0, max_s=300.0, reset_after_s=600.0)


def fail(state: CrashState, now: float, started: float, ready_for: float = 0.0, reason: str = "exit 1") -> CrashState:
    return record_failure(state, now, started, ready_for, reason, ("last line",), SETTINGS)


def test_the_first_failure_is_replaced_at_once_then_waits_double_from_10_s_to_a_5_min_cap():
    assert [delay_s(n, SETTINGS) for n in range(1, 10)] == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    assert delay_s(10_000, SETTINGS) == 300  # no overflow however long the loop


def test_a_model_that_never_starts_backs_off_with_growing_gaps_and_probes_one_replica_at_a_time():
    state, now, starts = CrashState(), 0.0, []
    for _ in range(8):
        # The shell: wait for a start to be allowed (a tick per second), start, the replica dies 2 s later.
        while allowed_starts(state, now, wanted=3, starting=0) == 0:
            now += 1.0
        allowed = allowed_starts(state, now, wanted=3, starting=0)
        starts.append((now, allowed))
        started, now = now, now + 2.0
        state = fail(state, now, started)
    times = [t for t, _ in starts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == [2, 12, 22, 42, 82, 162, 302]  # 2 s alive + 0, 10, 20, 40, 80, 160, 300 s of back-off
    assert [n for _, n in starts] == [3, 3, 1, 1, 1, 1, 1, 1]  # probes once the loop is established
    assert state.restarts == 8 and state.reason == "exit 1" and state.log_tail == ("last line",)


def test_replicas_dying_in_one_wave_count_once():
    state = fail(CrashState(), now=5.0, started=0.0)
    state = fail(state, now=5.2, started=0.0, reason="exit 134")
    state = fail(state, now=5.4, started=0.1)
    assert state.restarts == 1 and state.retry_at_s == 5.0 and state.reason == "exit 1"  # the last of the wave's reasons
    state = fail(state, now=9.0, started=6.0)  # a replacement started after the wave: a new attempt
    assert state.restarts == 2 and state.retry_at_s == 19.0


def test_while_backing_off_nothing_starts_and_status_says_when_the_next_try_is():
    state = fail(fail(CrashState(), 2.0, 0.0), 6.0, 3.0)
    assert allowed_starts(state, 15.9, wanted=2, starting=0) == 0
    assert describe(state, 6.0) == "crash-loop, next try in 10 s, 2 restarts: exit 1"
    assert allowed_starts(state, 16.0, wanted=2, starting=0) == 1
    assert allowed_starts(state, 16.0, wanted=2, starting=1) == 0  # the probe is under way
    assert describe(state, 16.5) == "crash-loop, retrying, 2 restarts: exit 1"


def test_a_ready_probe_lets_the_rest_start_and_a_long_ready_replica_clears_the_loop():
    state = fail(fail(fail(CrashState(), 2.0, 0.0), 6.0, 3.0), 20.0, 16.0)
    state = record_ready(state)
    assert allowed_starts(state, 21.0, wanted=2, starting=0) == 2
    assert "recovering" in describe(state, 21.0)
    assert settle(state, longest_ready_s=599.0, settings=SETTINGS).restarts == 3
    assert settle(state, longest_ready_s=600.0, settings=SETTINGS) == CrashState()
    assert describe(CrashState(), 0.0) == "" and allowed_starts(CrashState(), 0.0, 4, 4) == 4


def test_a_replica_that_served_past_the_reset_time_starts_a_fresh_count():
    state = fail(fail(fail(CrashState(), 2.0, 0.0), 6.0, 3.0), 20.0, 16.0)
    state = fail(state, now=2000.0, started=30.0, ready_for=1900.0)
    assert state.restarts == 1 and state.retry_at_s == 2000.0  # replaced at once, as a first failure
    # Ready but not long enough: the failure still counts and the doubling continues.
    looping = fail(fail(CrashState(), 2.0, 0.0), 6.0, 3.0)
    looping = fail(record_ready(looping), now=100.0, started=16.0, ready_for=80.0)
    assert looping.restarts == 3 and looping.retry_at_s == 120.0 and not looping.proven


@pytest.mark.parametrize(
    "actuator,message",
    [
        ({"crash_backoff_initial_s": 0}, "crash_backoff_initial_s must be > 0"),
        ({"crash_backoff_initial_s": 60, "crash_backoff_max_s": 30}, "<= crash_backoff_max_s"),
        ({"crash_backoff_reset_after_s": -1}, "crash_backoff_reset_after_s > 0"),
        ({"replica_log_keep_bytes": 100}, "replica_log_keep_bytes must be >= 4096"),
    ],
)
def test_back_off_settings_are_validated(actuator, message):
    with pytest.raises(ConfigError) as error:
        parse_config({"actuator": actuator})
    assert message in str(error.value)


def test_leftovers_are_the_processes_marked_with_this_state_directory(tmp_path):
    from ebbflow.actuator.leftovers import OWNER_ENV, REPLICA_ID_ENV, find_leftovers, replica_markers

    proc, state = tmp_path / "proc", tmp_path / "state"
    state.mkdir()
    processes = {
        "101": replica_markers(state, "aaaa1111"),  # an earlier run's tritonserver or stub
        "102": {**replica_markers(state, "bbbb2222"), "PATH": "/usr/bin"},
        "103": replica_markers(tmp_path / "other-state", "cccc3333"),  # another ebbflow's
        "104": {OWNER_ENV: str(state.resolve())},  # no replica id: not a replica
        "105": {"PATH": "/usr/bin"},
        "7": replica_markers(state, "dddd4444"),  # this process itself
    }
    for pid, environ in processes.items():
        (proc / pid).mkdir(parents=True)
        (proc / pid / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items()))
    (proc / "106").mkdir()  # environ unreadable or gone
    (proc / "self").mkdir()
    assert find_leftovers(state, proc, own_pid=7) == {101: "aaaa1111", 102: "bbbb2222"}
    assert REPLICA_ID_ENV in processes["101"]


def test_the_reason_is_the_last_error_line_of_the_log_and_a_slot_log_keeps_a_bounded_tail(tmp_path):
    from ebbflow.runtime.triton import last_error, log_tail, start_replica_log

    tail = (
        "I1203 14:27:34.088 server.cc:338] All models are stopped, unloading models",
        "error: creating server: Invalid argument - load failed for model 'raising': RuntimeError: weights.bin is missing",
        "At:",
        "  /models/raising/1/model.py(4): initialize",
    )
    assert last_error(tail) == tail[1] and last_error(tail[:1]) == ""
    path = tmp_path / "triton-llm-0.log"
    offsets = []
    for run in range(20):
        offsets.append(start_replica_log(path, 4096, f"replica r{run} starting"))
        with open(path, "a") as log:
            log.write("".join(f"run {run} line {n}\n" for n in range(100)))
    text = path.read_text()
    assert len(text.encode()) <= 4096 + len("==== replica r19 starting\n") + 100 * len("run 19 line 99\n")
    assert re.fullmatch(r"run 1[5-8] line \d+", text.splitlines()[0]) and "==== replica r19 starting" in text  # whole lines, recent runs
    assert log_tail(path, offsets[-1], 2) == ("run 19 line 98", "run 19 line 99")
