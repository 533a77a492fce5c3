"""`python -m tests.integration.http_client_check ADDRESS MODE`: tritonclient.http (the blocking, gevent-based
client, unchanged) against a router's HTTP port, in a process of its own: gevent must not share the test's
threads. MODE `served`: a replica of llm is ready; `zero`: llm has no replica yet. Exits non-zero on a failed check."""

from __future__ import annotations

import sys

import numpy as np
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from ebbflow.emulator.tokens import expected_text

PROMPT = "alpha beta gamma delta"


def http_inputs(prompt: str, max_tokens: int, binary: bool) -> list[triton_http.InferInput]:
    inputs = [triton_http.InferInput("text_input", [1, 1], "BYTES"), triton_http.InferInput("max_tokens", [1, 1], "INT32")]
    inputs[0].set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_), binary_data=binary)
    inputs[1].set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32), binary_data=binary)
    return inputs


def check(address: str, mode: str) -> None:
    client = triton_http.InferenceServerClient(address, network_timeout=30.0)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["name"] == "ebbflow-router"
        metadata = client.get_model_metadata("llm")
        assert [i["name"] for i in metadata["inputs"]] == ["text_input", "max_tokens", "stream"], metadata
        assert metadata["inputs"][1] == {"name": "max_tokens", "datatype": "INT32", "shape": [-1, 1]}, metadata
        assert [o["name"] for o in metadata["outputs"]] == ["text_output"], metadata
        assert client.is_model_ready("llm")
        assert client.get_model_config("llm")["name"] == "llm"
        success = client.get_inference_statistics("llm")["model_stats"][0]["inference_stats"]["success"]["count"]
        if mode == "served":
            for binary, tokens in ((True, 7), (False, 9)):
                wanted = [triton_http.InferRequestedOutput("text_output", binary_data=binary)]
                result = client.infer("llm", http_inputs(PROMPT, tokens, binary), outputs=wanted)
                got = result.as_numpy("text_output").reshape(-1)[0]
                assert (got.decode() if isinstance(got, bytes) else got) == expected_text(PROMPT, tokens), got
            after = client.get_inference_statistics("llm")["model_stats"][0]["inference_stats"]["success"]["count"]
            assert after == success + 2, (success, after)
        else:
            assert success == 0, success
        try:
            client.get_model_metadata("nope")
            raise AssertionError("an unknown model's metadata was answered")
        except InferenceServerException as error:
            assert "unknown model 'nope'" in str(error.message()), error
    finally:
        client.close()


if __name__ == "__main__":
    check(sys.argv[1], sys.argv[2])
    print("ok")
