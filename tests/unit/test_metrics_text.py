"""The fast /metrics reader agrees with prometheus_client's full parser on texts recorded from the real tritonserver."""

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ebbflow.collector.metrics_text import GPU_GAUGES, HOST_GAUGES, WANTED, parse_metrics_text

DATA = Path(__file__).parent.parent / "data"
RECORDED = ["triton_metrics_llm.txt", "triton_metrics_4models_8gpus.txt"]


def reference(text: str) -> tuple[dict, dict, dict]:
    """The same sums, computed from prometheus_client's parse."""
    models: dict[str, dict[str, float]] = {}
    gpus: dict[str, dict[str, float]] = {}
    host: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # prometheus_client names counter samples with a _total suffix that Triton's text lacks.
            name = sample.name if sample.name in WANTED else sample.name.removesuffix("_total")
            if name not in WANTED:
                continue
            if name in HOST_GAUGES:
                host[name] = host.get(name, 0.0) + sample.value
            elif name in GPU_GAUGES:
                gpu = gpus.setdefault(sample.labels["gpu_uuid"], {})
                gpu[name] = gpu.get(name, 0.0) + sample.value
            elif "model" in sample.labels:
                model = models.setdefault(sample.labels["model"], {})
                model[name] = model.get(name, 0.0) + sample.value
    return models, gpus, host


@pytest.mark.parametrize("name", RECORDED)
def test_fast_reader_agrees_with_prometheus_client(name: str):
    text = (DATA / name).read_bytes()
    fast = parse_metrics_text(text)
    models, gpus, host = reference(text.decode())
    assert fast.models, "the recorded text must hold model families"
    assert fast.models.keys() == models.keys()
    for model, families in models.items():
        assert fast.models[model] == pytest.approx(families), model
    assert fast.gpus.keys() == gpus.keys()
    for gpu, families in gpus.items():
        assert fast.gpus[gpu] == pytest.approx(families)
    assert fast.host == pytest.approx(host)


def test_recorded_texts_cover_what_the_collector_reads():
    one = parse_metrics_text((DATA / "triton_metrics_llm.txt").read_bytes())
    assert set(one.models) == {"llm"}
    assert {"nv_inference_request_duration_us", "nv_inference_exec_count", "nv_inference_pending_request_count"} <= set(one.models["llm"])
    four = parse_metrics_text((DATA / "triton_metrics_4models_8gpus.txt").read_bytes())
    assert len(four.models) == 4 and len(four.gpus) == 8


def test_edge_cases_of_the_text_format():
    text = b"\n".join(
        [
            b"# HELP nv_inference_count x",
            b'nv_inference_count{model="a",version="1"} 3',
            b'nv_inference_count{model="a",version="2"} 4 1700000000000',  # versions add up; timestamps ignored
            b'nv_inference_count{version="1",model="we\\"ird"} 1',  # label order and escaped quotes
            b'nv_inference_count_other{model="a"} 100',  # a longer name is another family
            b'nv_inference_exec_count{model="a"} NaN',
            b'nv_inference_queue_duration_us{model="a"} not-a-number',  # malformed values are skipped
            b"nv_cpu_utilization 0.5",
            b'xnv_inference_count{model="a"} 9',  # not at a line start
        ]
    )
    parsed = parse_metrics_text(text)
    assert parsed.models["a"]["nv_inference_count"] == 7
    assert parsed.models['we"ird']["nv_inference_count"] == 1
    assert "nv_inference_queue_duration_us" not in parsed.models["a"]
    assert parsed.models["a"]["nv_inference_exec_count"] != parsed.models["a"]["nv_inference_exec_count"]  # NaN kept as NaN
    assert parsed.host == {"nv_cpu_utilization": 0.5}
