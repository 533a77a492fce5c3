"""Answers the router builds itself instead of asking a replica: pure functions of protobuf messages.

Metadata and config come from the model's config.pbtxt when no replica is
ready; statistics are summed over every ready replica's answer; methods that
make no sense through a router are refused, each with the reason.
"""

from __future__ import annotations

from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2

_ADMIN = (
    "models are loaded and unloaded by the ebbflow control plane, not through the router: "
    "change the model's policy (KV bucket 'policies', or the config file's models section and `ebbflow up`)"
)
_SHM = "shared memory is local to one replica and cannot cross the router; send tensors in the request"

REFUSED_METHODS: dict[str, tuple[grpc.StatusCode, str]] = {
    **{method: (grpc.StatusCode.PERMISSION_DENIED, _ADMIN) for method in ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")},
    **{
        method: (grpc.StatusCode.UNIMPLEMENTED, _SHM)
        for method in (
            "SystemSharedMemoryStatus",
            "SystemSharedMemoryRegister",
            "SystemSharedMemoryUnregister",
            "CudaSharedMemoryStatus",
            "CudaSharedMemoryRegister",
            "CudaSharedMemoryUnregister",
        )
    },
    **{
        method: (grpc.StatusCode.UNIMPLEMENTED, f"{method} is per replica and not offered by the router")
        for method in ("TraceSetting", "LogSettings")
    },
}
"""GRPCInferenceService methods the router answers with an error of its own: the gRPC code and why."""


def _datatype(config_type: int) -> str:
    name = model_config_pb2.DataType.Name(config_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def metadata_from_config(config: model_config_pb2.ModelConfig) -> service_pb2.ModelMetadataResponse:
    """What Triton's ModelMetadata says for a model, built from its config (batching adds a leading -1)."""
    batch = [-1] if config.max_batch_size > 0 else []

    def tensors(items: Any) -> list[service_pb2.ModelMetadataResponse.TensorMetadata]:
        return [
            service_pb2.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=_datatype(t.data_type), shape=[*batch, *t.dims]) for t in items
        ]

    return service_pb2.ModelMetadataResponse(
        name=config.name, versions=["1"], platform=config.platform or config.backend, inputs=tensors(config.input), outputs=tensors(config.output)
    )


def sum_statistics(model: str, replies: list[service_pb2.ModelStatisticsResponse]) -> service_pb2.ModelStatisticsResponse:
    """One ModelStatisticsResponse with counts and durations summed over replicas, per model version."""
    merged: dict[tuple[str, str], service_pb2.ModelStatistics] = {}
    for reply in replies:
        for stats in reply.model_stats:
            key = (stats.name, stats.version)
            total = merged.get(key)
            if total is None:
                merged[key] = total = service_pb2.ModelStatistics(name=stats.name, version=stats.version)
            total.last_inference = max(total.last_inference, stats.last_inference)
            total.inference_count += stats.inference_count
            total.execution_count += stats.execution_count
            for field_descriptor in service_pb2.InferStatistics.DESCRIPTOR.fields:
                target = getattr(total.inference_stats, field_descriptor.name)
                source = getattr(stats.inference_stats, field_descriptor.name)
                target.count += source.count
                target.ns += source.ns
            by_size = {b.batch_size: b for b in total.batch_stats}
            for batch in stats.batch_stats:
                into = by_size.get(batch.batch_size)
                if into is None:
                    into = by_size[batch.batch_size] = total.batch_stats.add(batch_size=batch.batch_size)
                for name in ("compute_input", "compute_infer", "compute_output"):
                    getattr(into, name).count += getattr(batch, name).count
                    getattr(into, name).ns += getattr(batch, name).ns
    if not merged:
        merged[(model, "1")] = service_pb2.ModelStatistics(name=model, version="1")
    return service_pb2.ModelStatisticsResponse(model_stats=list(merged.values()))
