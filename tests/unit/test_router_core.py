"""Router core: wire parsing, picking, metering."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from ebbflow.router.core import (
    Candidate,
    Ejector,
    HoldQueue,
    MalformedRequest,
    ModelMeter,
    QueueFull,
    RetryBudget,
    Routing,
    pick_replica,
    read_model_name,
    read_request_head,
    read_stream_response,
)
from ebbflow.runtime.wire import LATENCY_BUCKETS_S, histogram_quantile


def infer_request(model: str, payload: bytes = b"", version: str = "") -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version, id="req-1")
    tensor = request.inputs.add(name="text_input", datatype="BYTES", shape=[1, 1])
    tensor.contents.bytes_contents.append(payload)
    request.raw_input_contents.append(payload)
    request.parameters["priority"].int64_param = 3
    return request.SerializeToString()


@given(st.text(min_size=1, max_size=64), st.binary(max_size=512), st.text(max_size=8))
def test_reads_the_model_name_protobuf_wrote(model, payload, version):
    assert read_model_name(infer_request(model, payload, version)) == model


@pytest.mark.parametrize(
    "message",
    [
        service_pb2.ModelMetadataRequest(name="llm", version="1"),
        service_pb2.ModelConfigRequest(name="llm"),
        service_pb2.ModelStatisticsRequest(name="llm"),
    ],
)
def test_other_model_requests_keep_the_name_in_field_one(message):
    assert read_model_name(message.SerializeToString()) == "llm"


@settings(max_examples=500)
@given(st.binary(max_size=256))
def test_random_bytes_give_a_name_or_malformed_never_a_crash(data):
    try:
        name = read_model_name(data)
    except MalformedRequest:
        return
    assert isinstance(name, str) and name


@given(st.integers(min_value=1, max_value=200))
def test_truncated_requests_are_malformed(cut):
    data = infer_request("llm", b"x" * 300)
    truncated = data[: max(0, len(data) - cut)]
    try:
        assert read_model_name(truncated) == "llm"  # a cut at a field boundary is still a valid prefix
    except MalformedRequest:
        pass


def test_missing_model_name_is_malformed():
    with pytest.raises(MalformedRequest, match="model_name is missing"):
        read_model_name(service_pb2.ModelInferRequest(id="x").SerializeToString())


def test_picks_least_outstanding_and_rotates_ties():
    candidates = [Candidate("a", 3), Candidate("b", 1), Candidate("c", 1)]
    assert {pick_replica(candidates, r).key for r in range(4)} == {"b", "c"}
    assert pick_replica([Candidate("a", 0), Candidate("b", 5)], 7).key == "a"
    assert pick_replica([], 0) is None


def test_meter_time_averages_in_flight_and_counts_arrivals():
    meter = ModelMeter(window_start_s=0.0)
    meter.accept(0.0)
    meter.accept(0.5)
    meter.finish(1.0, latency_s=1.0, ok=True)
    meter.finish(1.5, latency_s=1.0, ok=False)
    stats = meter.close_window(2.0)
    # in flight: 1 for 0.5 s, 2 for 0.5 s, 1 for 0.5 s, 0 for 0.5 s -> 2.0 request-seconds over 2 s
    assert stats.in_flight_avg == pytest.approx(1.0)
    assert stats.arrivals == 2 and stats.errors == 1 and stats.in_flight_now == 0
    assert sum(stats.latency_counts) == 2
    follow = meter.close_window(3.0)
    assert follow.arrivals == 0 and follow.in_flight_avg == 0.0


def test_requests_spanning_windows_count_in_both():
    meter = ModelMeter(window_start_s=0.0)
    meter.accept(0.0)
    assert meter.close_window(1.0).in_flight_avg == pytest.approx(1.0)
    assert meter.close_window(2.0).in_flight_avg == pytest.approx(1.0)


def test_histogram_quantile_uses_bucket_bounds():
    counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
    counts[10] = 99
    counts[20] = 1
    assert histogram_quantile(counts, 0.5) == LATENCY_BUCKETS_S[10]
    assert histogram_quantile(counts, 0.999) == LATENCY_BUCKETS_S[20]
    assert histogram_quantile([0] * 5, 0.5) == 0.0


def test_the_request_head_has_model_and_id():
    head = read_request_head(infer_request("llm", b"payload"))
    assert (head.model, head.id) == ("llm", "req-1")
    assert read_request_head(service_pb2.ModelMetadataRequest(name="llm", version="1").SerializeToString()).id == ""


def stream_response(request_id: str, final: bool | None, error: str = "") -> bytes:
    message = service_pb2.ModelStreamInferResponse(error_message=error)
    message.infer_response.id = request_id
    message.infer_response.raw_output_contents.append(b"\x05\x00\x00\x00token")
    message.infer_response.parameters["other"].string_param = "x"
    if final is not None:
        message.infer_response.parameters["triton_final_response"].bool_param = final
    return message.SerializeToString()


@pytest.mark.parametrize("final", [True, False, None])
def test_stream_responses_give_id_and_final_flag(final):
    head = read_stream_response(stream_response("r7", final))
    assert (head.id, head.final, head.error) == ("r7", bool(final), "")


def test_a_stream_error_response_is_read():
    head = read_stream_response(service_pb2.ModelStreamInferResponse(error_message="boom").SerializeToString())
    assert head.error == "boom" and head.final


def test_least_outstanding_uses_the_stale_pending_count_only_to_break_ties():
    assert pick_replica([Candidate("a", 1, pending=0), Candidate("b", 0, pending=9)], 0).key == "b"
    assert pick_replica([Candidate("a", 1, pending=0), Candidate("b", 1, pending=9)], 0).key == "a"


def test_round_robin_visits_every_replica_in_turn():
    candidates = [Candidate("c", 9), Candidate("a", 0), Candidate("b", 5)]
    assert [pick_replica(candidates, n, Routing.ROUND_ROBIN).key for n in range(6)] == ["a", "b", "c", "a", "b", "c"]


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=2, max_size=6), st.integers(min_value=0, max_value=2**32))
def test_power_of_two_never_picks_the_more_loaded_of_its_pair(loads, draw):
    candidates = [Candidate(f"r{i}", load) for i, load in enumerate(loads)]
    chosen = pick_replica(candidates, draw, Routing.POWER_OF_TWO)
    assert chosen is not None
    assert chosen.in_flight <= sorted(loads)[-1]
    # over all draws the single most loaded replica is never chosen when it is strictly the worst
    worst = max(loads)
    if loads.count(worst) == 1:
        picks = {pick_replica(candidates, d, Routing.POWER_OF_TWO).key for d in range(len(loads) * (len(loads) - 1))}
        assert f"r{loads.index(worst)}" not in picks


def test_power_of_two_draws_every_pair():
    candidates = [Candidate(k, 0) for k in "abcd"]
    assert {pick_replica(candidates, d, Routing.POWER_OF_TWO).key for d in range(12)} == set("abcd")


def test_a_replica_failing_in_a_row_is_ejected_for_a_while_and_all_ejected_means_use_all():
    ejector = Ejector(after_failures=2, eject_s=10.0)
    assert not ejector.record("a", ok=False, now_s=0.0)
    assert ejector.record("a", ok=False, now_s=1.0)
    candidates = [Candidate("a", 0), Candidate("b", 3)]
    assert [c.key for c in ejector.usable(candidates, 5.0)] == ["b"]
    assert [c.key for c in ejector.usable(candidates, 11.0)] == ["a", "b"]
    ejector.record("b", ok=False, now_s=12.0)
    assert not ejector.record("b", ok=True, now_s=12.5)
    assert not ejector.record("b", ok=False, now_s=13.0), "a success resets the streak"
    ejector.record("a", ok=False, now_s=20.0)
    ejector.record("a", ok=False, now_s=20.0)
    ejector.record("b", ok=False, now_s=20.0)
    assert len(ejector.usable(candidates, 21.0)) == 2, "panic: with every replica ejected, use them all"


def test_the_hold_queue_bounds_count_and_bytes_and_keeps_order():
    queue = HoldQueue(max_requests=3, max_bytes=100)
    first, second = queue.admit(40), queue.admit(40)
    with pytest.raises(QueueFull, match="bytes"):
        queue.admit(30)
    third = queue.admit(20)
    with pytest.raises(QueueFull, match="requests already held"):
        queue.admit(1)
    queue.leave(second)
    assert queue.in_order() == [first, third] and (queue.count, queue.bytes) == (2, 60)
    queue.leave(second)  # leaving twice changes nothing
    assert (queue.count, queue.bytes) == (2, 60)


def test_the_retry_budget_refuses_requests_beyond_it():
    budget = RetryBudget(max_bytes=100)
    assert budget.take(60) and not budget.take(50) and budget.take(40)
    budget.give_back(60)
    assert budget.held == 40 and budget.take(60)
