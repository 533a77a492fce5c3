"""Router core: wire parsing, picking, metering."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from ebbflow.router.core import LATENCY_BUCKETS_S, Candidate, MalformedRequest, ModelMeter, histogram_quantile, pick_replica, read_model_name


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
