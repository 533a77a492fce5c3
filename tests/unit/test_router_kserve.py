"""KServe v2 HTTP as the router reads it: paths, what counts as a request body, answers built without a replica."""

from __future__ import annotations

import json

import grpc
import pytest
from tritonclient.grpc import model_config_pb2

from ebbflow.router.kserve import (
    STATUS_OF_CODE,
    BadRequest,
    ModelPath,
    check_infer_body,
    code_of_status,
    http_status,
    metadata_json,
    parse_json_object,
    parse_model_path,
    sum_statistics_json,
)


@pytest.mark.parametrize(
    "path, parsed",
    [
        ("/v2/models/llm", ModelPath("llm", "", "")),
        ("/v2/models/llm/infer", ModelPath("llm", "", "infer")),
        ("/v2/models/llm/versions/3/generate_stream", ModelPath("llm", "3", "generate_stream")),
        ("/v2/models/llm/versions/1", ModelPath("llm", "1", "")),
        ("/v2/models/llm/ready", ModelPath("llm", "", "ready")),
        ("/v2/models/", None),
        ("/v2/models//infer", None),
        ("/v2/models/llm/versions//infer", None),
        ("/v2/models/llm/a/b", None),
        ("/v1/models/llm/infer", None),
        ("/v2", None),
    ],
)
def test_model_paths(path: str, parsed: ModelPath | None) -> None:
    assert parse_model_path(path) == parsed


GOOD = json.dumps({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [2], "data": [1, 2]}]}).encode()


def test_an_infer_body_is_a_json_object_with_named_inputs_and_binary_data_after_its_header() -> None:
    check_infer_body(GOOD, None)
    check_infer_body(GOOD + b"\x00\x01binary", str(len(GOOD)))
    check_infer_body(b"{}", None)  # Triton itself says what is missing


@pytest.mark.parametrize(
    "body, header_length, message",
    [
        (b"", None, "empty request body"),
        (b"{not json", None, "failed to parse the request JSON"),
        (b"\xff\xfe", None, "failed to parse"),
        (b"[1, 2]", None, "must be an object, got list"),
        (b'{"inputs": 5}', None, "'inputs' must be a list"),
        (b'{"inputs": [{"shape": [1]}]}', None, "'inputs' must be a list"),
        (GOOD, "abc", "must be an integer"),
        (GOOD, "-1", "outside the body"),
        (GOOD, str(len(GOOD) + 1), "outside the body"),
        (GOOD + b"\x00", str(len(GOOD) - 1), "failed to parse"),
        (b"[" * 100000 + b"]" * 100000, None, "nested too deeply"),
    ],
)
def test_what_is_not_an_infer_request_is_refused_with_the_reason(body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        check_infer_body(body, header_length)


def test_generate_bodies_must_be_json_objects() -> None:
    assert parse_json_object(b'{"text_input": "hi", "max_tokens": 3}') == {"text_input": "hi", "max_tokens": 3}
    with pytest.raises(BadRequest, match="got str"):
        parse_json_object(b'"hi"')


def test_status_codes_both_ways() -> None:
    assert http_status("NOT_FOUND") == 404 and http_status("DEADLINE_EXCEEDED") == 504
    assert http_status("RESOURCE_EXHAUSTED") == 429 and http_status("DATA_LOSS") == 500
    assert code_of_status(200) == "OK" and code_of_status(400) == "INVALID_ARGUMENT" and code_of_status(503) == "UNAVAILABLE"
    assert code_of_status(418) == "INVALID_ARGUMENT" and code_of_status(502) == "INTERNAL"
    assert all(name in grpc.StatusCode.__members__ for name in STATUS_OF_CODE), "names the router turns back into grpc.StatusCode"


def test_metadata_from_the_config_matches_tritons_json() -> None:
    config = model_config_pb2.ModelConfig(name="llm", backend="python", max_batch_size=8)
    config.input.add(name="text_input", data_type=model_config_pb2.TYPE_STRING, dims=[1])
    config.output.add(name="text_output", data_type=model_config_pb2.TYPE_STRING, dims=[1])
    assert metadata_json(config) == {
        "name": "llm",
        "versions": ["1"],
        "platform": "python",
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1, 1]}],
    }


def replica_stats(count: int, ns: int, last: int) -> dict:
    """One replica's answer to GET /v2/models/llm/stats, as Triton writes it."""
    return {
        "model_stats": [
            {
                "name": "llm", "version": "1", "last_inference": last, "inference_count": count, "execution_count": count,
                "inference_stats": {"success": {"count": count, "ns": ns}, "fail": {"count": 0, "ns": 0}},
                "batch_stats": [{"batch_size": 1, "compute_infer": {"count": count, "ns": ns}}],
                "memory_usage": [],
            }
        ]
    }  # fmt: skip


def test_statistics_are_summed_over_replicas_as_numbers_with_every_field() -> None:
    total = sum_statistics_json("llm", [replica_stats(2, 1000, 5), replica_stats(3, 500, 9)])
    (stats,) = total["model_stats"]
    assert stats["inference_count"] == 5 and stats["last_inference"] == 9
    assert stats["inference_stats"]["success"] == {"count": 5, "ns": 1500}
    assert stats["inference_stats"]["queue"] == {"count": 0, "ns": 0}, "zeros are written, as Triton does"
    assert stats["batch_stats"][0]["compute_infer"] == {"count": 5, "ns": 1500}
    zero = sum_statistics_json("llm", [])["model_stats"][0]
    assert (zero["name"], zero["version"], zero["inference_count"]) == ("llm", "1", 0)
