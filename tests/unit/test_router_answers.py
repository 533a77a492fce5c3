"""Answers the router builds itself: metadata from a model config, statistics summed over replicas."""

from tritonclient.grpc import service_pb2

from ebbflow.router.answers import metadata_from_config, sum_statistics
from ebbflow.runtime.triton import default_model_repository, read_model_configs


def test_metadata_from_the_repository_config_matches_what_triton_reports():
    config = read_model_configs(default_model_repository())["llm"]
    metadata = metadata_from_config(config)
    assert metadata.name == "llm" and metadata.platform == "python"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("text_input", "BYTES", [-1, 1]),
        ("max_tokens", "INT32", [-1, 1]),
        ("stream", "BOOL", [-1, 1]),
    ]
    assert [(t.name, t.datatype) for t in metadata.outputs] == [("text_output", "BYTES")]


def test_statistics_are_summed_per_version_and_batch_size():
    def reply(count: int, ns: int, last: int) -> service_pb2.ModelStatisticsResponse:
        stats = service_pb2.ModelStatistics(name="llm", version="1", last_inference=last, inference_count=count, execution_count=count)
        stats.inference_stats.success.count = count
        stats.inference_stats.success.ns = ns
        batch = stats.batch_stats.add(batch_size=1)
        batch.compute_infer.count = count
        return service_pb2.ModelStatisticsResponse(model_stats=[stats])

    (total,) = sum_statistics("llm", [reply(3, 300, 10), reply(4, 400, 20)]).model_stats
    assert (total.inference_count, total.inference_stats.success.ns, total.last_inference) == (7, 700, 20)
    assert [(b.batch_size, b.compute_infer.count) for b in total.batch_stats] == [(1, 7)]
    (empty,) = sum_statistics("llm", []).model_stats
    assert empty.name == "llm" and empty.inference_count == 0
