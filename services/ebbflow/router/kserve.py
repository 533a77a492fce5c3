"""KServe v2 HTTP (Triton's REST protocol) as the router reads and answers it: pure functions, no I/O.

The router forwards HTTP request bodies to a replica's HTTP port unchanged;
what it needs of them is only enough to refuse what no replica should see:
the path (which model, which endpoint), and whether the body is a request at
all. An infer body is a JSON header, optionally followed by binary tensor
data whose start the `Inference-Header-Content-Length` header gives (Triton's
binary tensor data extension); generate and generate_stream take a JSON
object. Answers the router builds itself (errors, metadata and config from
the model's config at zero replicas, statistics summed over replicas) are
built here, in Triton's JSON shapes: every error is `{"error": "..."}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2

from ebbflow.router.answers import metadata_from_config, sum_statistics

Endpoint = Literal["infer", "generate", "generate_stream"]
FORWARDED_ENDPOINTS: tuple[Endpoint, ...] = ("infer", "generate", "generate_stream")
"""POST endpoints the router forwards to a replica (holding them at zero replicas); the fast path's too."""

HEADER_LENGTH = "Inference-Header-Content-Length"

STATUS_OF_CODE: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403,
    "UNIMPLEMENTED": 501,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "CANCELLED": 499,
}
"""A router refusal's gRPC code (by name) → the HTTP status of the same refusal over HTTP (anything else: 500)."""


def http_status(code: str) -> int:
    """The HTTP status for a gRPC code's name."""
    return STATUS_OF_CODE.get(code, 500)


def code_of_status(status: int) -> str:
    """A replica's HTTP status → the name of the gRPC code the router's books count it under."""
    if status < 400:
        return "OK"
    for code, mapped in STATUS_OF_CODE.items():
        if mapped == status:
            return code
    return "INVALID_ARGUMENT" if status < 500 else "INTERNAL"


def error_body(message: str) -> bytes:
    """Triton's error shape."""
    return json.dumps({"error": message}).encode()


class BadRequest(ValueError):
    """A request body no replica should see; the message says what is wrong with it."""


@dataclass(frozen=True)
class ModelPath:
    model: str
    version: str  # "" when the path names none
    rest: str  # what follows the model (and version): "", "ready", "infer", "stats", "config", ...


def parse_model_path(path: str) -> ModelPath | None:
    """`/v2/models/{model}[/versions/{version}][/{rest}]` → its parts; None for any other path."""
    parts = path.split("/")
    if len(parts) < 4 or parts[:3] != ["", "v2", "models"] or not parts[3]:
        return None
    model, tail = parts[3], parts[4:]
    version = ""
    if len(tail) >= 2 and tail[0] == "versions":
        version, tail = tail[1], tail[2:]
        if not version:
            return None
    if len(tail) > 1:
        return None
    return ModelPath(model, version, tail[0] if tail else "")


def check_infer_body(body: bytes, header_length: str | None) -> None:
    """Raise BadRequest unless `body` is a KServe v2 infer request: a JSON object (the first `header_length`
    bytes when binary tensor data follows) whose `inputs`, when present, is a list of named tensors."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length[:40]!r}") from None
        if not 0 <= length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} {length} is outside the body's {len(body)} bytes")
        body = body[:length]
    request = parse_json_object(body)
    inputs = request.get("inputs")
    if inputs is not None and (not isinstance(inputs, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in inputs)):
        raise BadRequest("'inputs' must be a list of tensors, each an object with a 'name'")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest saying why it is not one."""
    if not body:
        raise BadRequest("empty request body; expected a JSON object")
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise BadRequest(f"failed to parse the request JSON: {error.msg} at byte {error.pos}") from None
    except RecursionError:
        raise BadRequest("request JSON is nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest(f"request JSON must be an object, got {type(value).__name__}")
    return value


# ---- answers built without a replica ---------------------------------------------------------------------


def metadata_json(config: model_config_pb2.ModelConfig) -> dict[str, Any]:
    """GET /v2/models/{m} as Triton answers it, from the model's config."""
    metadata = metadata_from_config(config)
    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": [_tensor(t) for t in metadata.inputs],
        "outputs": [_tensor(t) for t in metadata.outputs],
    }


def _tensor(tensor: service_pb2.ModelMetadataResponse.TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def config_json(config: model_config_pb2.ModelConfig) -> dict[str, Any]:
    """GET /v2/models/{m}/config: the model's config in protobuf's JSON mapping."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def sum_statistics_json(model: str, replies: list[dict[str, Any]]) -> dict[str, Any]:
    """GET /v2/models/{m}/stats summed over replicas' answers (zeros for none), in Triton's JSON shape."""
    parsed = [json_format.ParseDict(reply, service_pb2.ModelStatisticsResponse(), ignore_unknown_fields=True) for reply in replies]
    return _every_field(sum_statistics(model, parsed))


def _every_field(message: Any) -> dict[str, Any]:
    """A message as Triton writes its statistics: every field, zeros included, 64-bit integers as numbers
    (protobuf's JSON mapping leaves out zeros and writes 64-bit integers as strings)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        is_message = field.type == field.TYPE_MESSAGE
        if field.label == field.LABEL_REPEATED:
            out[field.name] = [_every_field(v) for v in value] if is_message else list(value)
        else:
            out[field.name] = _every_field(value) if is_message else value
    return out
