"""A fast reader of Triton's Prometheus text that keeps only the families the collector uses.

One compiled regular expression finds the wanted samples at line starts, so
the (much longer) rest of the text is skipped in C. Samples are summed per
model (over versions and any other label), per GPU, or for the host.
`tests/unit/test_metrics_text.py` checks it against prometheus_client's full
parser on texts recorded from a real tritonserver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Per-model families: counters and gauges labelled with model="...".
MODEL_COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    # The emulator's custom metrics (as vLLM and TensorRT-LLM backends export their own).
    "ebbflow_emulated_prompt_tokens_total",
    "ebbflow_emulated_generated_tokens_total",
)
MODEL_GAUGES = (
    "nv_inference_pending_request_count",
    "ebbflow_emulated_kv_cache_usage_ratio",
)
# Per-GPU gauges, labelled with gpu_uuid="...".
GPU_GAUGES = (
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
)
# Host gauges, unlabelled.
HOST_GAUGES = (
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
)
WANTED = MODEL_COUNTERS + MODEL_GAUGES + GPU_GAUGES + HOST_GAUGES

# Longest names first, so that no wanted name stops the alternation early at a prefix of another.
_NAMES = b"|".join(re.escape(name.encode()) for name in sorted(WANTED, key=len, reverse=True))
# name, optional {labels}, one space, value (an optional timestamp follows).
_SAMPLE = re.compile(rb"^(" + _NAMES + rb")(?:\{(.*)\})?[ \t]+(\S+)", re.MULTILINE)
_MODEL_LABEL = re.compile(rb'(?:^|,)\s*model\s*=\s*"((?:[^"\\]|\\.)*)"')
_GPU_LABEL = re.compile(rb'(?:^|,)\s*gpu_uuid\s*=\s*"((?:[^"\\]|\\.)*)"')
_GPU_FAMILIES = frozenset(GPU_GAUGES)
_HOST_FAMILIES = frozenset(HOST_GAUGES)


@dataclass
class MetricsText:
    """The wanted samples of one /metrics text."""

    # model -> family -> value summed over the model's versions.
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    # gpu_uuid -> family -> value.
    gpus: dict[str, dict[str, float]] = field(default_factory=dict)
    # family -> value, for the host.
    host: dict[str, float] = field(default_factory=dict)


def _unescape(value: bytes) -> str:
    text = value.decode()
    if "\\" not in text:
        return text
    return text.replace("\\\\", "\0").replace('\\"', '"').replace("\\n", "\n").replace("\0", "\\")


def _label_reader(pattern: re.Pattern[bytes]):  # type: ignore[no-untyped-def]
    """label text -> the label's value (None if absent), cached: the same label texts recur every scrape."""
    cache: dict[bytes, str | None] = {}

    def read(labels: bytes) -> str | None:
        try:
            return cache[labels]
        except KeyError:
            pass
        found = pattern.search(labels)
        value = _unescape(found.group(1)) if found is not None else None
        if len(cache) > 100_000:
            cache.clear()
        cache[labels] = value
        return value

    return read


_model_of = _label_reader(_MODEL_LABEL)
_gpu_of = _label_reader(_GPU_LABEL)


def parse_metrics_text(text: bytes) -> MetricsText:
    """The wanted families of a Prometheus text exposition; malformed values are skipped."""
    parsed = MetricsText()
    for name_bytes, labels, raw_value in _SAMPLE.findall(text):
        try:
            value = float(raw_value)
        except ValueError:
            continue
        name = name_bytes.decode()
        if name in _HOST_FAMILIES:
            parsed.host[name] = parsed.host.get(name, 0.0) + value
            continue
        if name in _GPU_FAMILIES:
            key, table = _gpu_of(labels), parsed.gpus
        else:
            key, table = _model_of(labels), parsed.models
        if key is not None:
            family = table.setdefault(key, {})
            family[name] = family.get(name, 0.0) + value
    return parsed
