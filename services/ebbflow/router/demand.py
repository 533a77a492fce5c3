"""The tokens a request asks for: its prompt's tokens plus the output tokens it requests. Pure.

A token is a whitespace-separated word (the emulated models' tokenizer; an
approximation for a real model). The prompt is every BYTES input (or, for
generate, every string field but the model's token count); the output is the
`max_tokens` input. What cannot be read counts as nothing: the replica
refuses a malformed request anyway.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

MAX_TOKENS = "max_tokens"


def words(text: bytes | str) -> int:
    return len(text.split())


def _number(value: Any) -> int:
    while isinstance(value, list) and value:
        value = value[0]
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def of_generate(body: bytes) -> int:
    """A generate or generate_stream body (JSON: the model's inputs by name)."""
    try:
        request = json.loads(body)
    except ValueError:
        return 0
    if not isinstance(request, dict):
        return 0
    prompt = sum(words(v) for k, v in request.items() if isinstance(v, str) and k != MAX_TOKENS)
    return prompt + _number(request.get(MAX_TOKENS))


def _raw_strings(raw: bytes) -> list[bytes]:
    """BYTES tensor contents on the wire: each element a 4-byte little-endian length, then its bytes."""
    out, at = [], 0
    while at + 4 <= len(raw):
        (size,) = struct.unpack_from("<I", raw, at)
        out.append(raw[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def _raw_int(raw: bytes, datatype: str) -> int:
    formats = {"INT32": "<i", "INT64": "<q", "UINT32": "<I", "UINT64": "<Q", "INT16": "<h", "INT8": "<b"}
    fmt = formats.get(datatype)
    if fmt is None or len(raw) < struct.calcsize(fmt):
        return 0
    return int(struct.unpack_from(fmt, raw)[0])


def of_grpc_infer(request: bytes) -> int:
    """A gRPC ModelInferRequest, contents typed or raw."""
    try:
        infer = service_pb2.ModelInferRequest.FromString(request)
    except DecodeError:
        return 0
    total = 0
    for index, tensor in enumerate(infer.inputs):
        raw = infer.raw_input_contents[index] if index < len(infer.raw_input_contents) else b""
        if tensor.name == MAX_TOKENS:
            contents = tensor.contents
            typed = list(contents.int_contents) or list(contents.int64_contents) or list(contents.uint_contents) or list(contents.uint64_contents)
            total += int(typed[0]) if typed else _raw_int(raw, tensor.datatype)
        elif tensor.datatype == "BYTES":
            strings = list(tensor.contents.bytes_contents) or _raw_strings(raw)
            total += sum(words(s) for s in strings)
    return total


def of_http_infer(body: bytes, header_length: str | None) -> int:
    """A KServe v2 HTTP infer body: a JSON header, then binary tensor data when `Inference-Header-Content-Length` says so."""
    try:
        length = int(header_length) if header_length else len(body)
        header = json.loads(body[:length])
    except ValueError:
        return 0
    tail, at, total = body[length:], 0, 0
    inputs = header.get("inputs") if isinstance(header, dict) else None
    for tensor in inputs if isinstance(inputs, list) else []:
        if not isinstance(tensor, dict):
            continue
        size = (tensor.get("parameters") or {}).get("binary_data_size") if isinstance(tensor.get("parameters"), dict) else None
        raw = b""
        if isinstance(size, int):
            raw, at = tail[at : at + size], at + size
        if tensor.get("name") == MAX_TOKENS:
            total += _raw_int(raw, str(tensor.get("datatype"))) if raw else _number(tensor.get("data"))
        elif tensor.get("datatype") == "BYTES":
            strings: list[Any] = _raw_strings(raw) if raw else _flatten(tensor.get("data"))
            total += sum(words(s) for s in strings if isinstance(s, (str, bytes)))
    return total


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [item for inner in value for item in _flatten(inner)]
    return [value]
