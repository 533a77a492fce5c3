"""OpenAI requests read into Triton generate requests, answers written back, and `router.openai` parsed."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from ebbflow.router.openai_api import Catalogue, OpenAIError, error_of_status
from ebbflow.runtime.config import DEFAULT_OPENAI_MODELS, OpenAIModel, RouterConfig, parse_config, router_config
from ebbflow.runtime.errors import ConfigError

CATALOGUE = Catalogue(DEFAULT_OPENAI_MODELS)


def read(kind: str, **request: object) -> object:
    return CATALOGUE.read(kind, json.dumps(request).encode(), now=1000.0)  # type: ignore[arg-type]


def refusal(kind: str, **request: object) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        read(kind, **request)
    return caught.value


def test_a_completion_becomes_a_generate_request_on_the_mapped_model() -> None:
    g = read("completion", model="llm", prompt=["one two three"], max_tokens=4, temperature=0.2)
    assert (g.triton_model, g.endpoint, g.prompt_tokens, g.max_tokens) == ("llm", "generate", 3, 4)
    assert json.loads(g.body) == {"text_input": "one two three", "max_tokens": 4}
    streamed = read("completion", model="llm", prompt="x", stream=True, stream_options={"include_usage": True})
    assert (streamed.triton_model, streamed.endpoint, streamed.include_usage, streamed.max_tokens) == ("llm_stream", "generate_stream", True, 16)


def test_chat_messages_go_through_the_template_and_text_parts_are_joined() -> None:
    g = read("chat", model="llm", messages=[{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
             max_completion_tokens=3)  # fmt: skip
    assert json.loads(g.body)["text_input"] == "user: hi there\nassistant:" and g.max_tokens == 3
    custom = Catalogue((OpenAIModel(name="m", model="t", chat_template="{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"),))
    g = custom.read("chat", b'{"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}', 0.0)
    assert json.loads(g.body)["text_input"] == "[system]s[user]u"


def test_what_cannot_be_honoured_is_refused_naming_the_parameter() -> None:
    assert (refusal("completion", model="gpt-4", prompt="x").status, refusal("completion", model="gpt-4", prompt="x").code) == (404, "model_not_found")
    assert refusal("completion", prompt="x").param == "model"
    assert refusal("completion", model="llm", prompt="x", n=3).param == "n"
    assert refusal("completion", model="llm", prompt="x", echo=True).param == "echo"
    assert refusal("completion", model="llm", prompt="x", logprobs=2).param == "logprobs"
    assert refusal("chat", model="llm", messages=[{"role": "user", "content": "x"}], tools=[{"type": "function"}]).param == "tools"
    assert refusal("completion", model="llm", prompt=["a", "b"]).param == "prompt"
    assert refusal("completion", model="llm", prompt=[1, 2]).param == "prompt"
    assert refusal("completion", model="llm", prompt="x", max_tokens=-1).param == "max_tokens"
    assert refusal("completion", model="llm", prompt="x", max_tokens=True).param == "max_tokens"
    assert refusal("completion", model="llm", prompt="x", stream="yes").param == "stream"
    assert refusal("completion", model="llm", prompt="x", stream_options={"include_usage": True}).param == "stream_options"
    assert refusal("chat", model="llm", messages=[{"role": "wizard", "content": "x"}]).param == "messages[0]"
    assert refusal("chat", model="llm", messages=[{"role": "user", "content": [{"type": "image_url"}]}]).param == "messages[0].content"
    # off values are not refusals
    assert read("completion", model="llm", prompt="x", n=1, echo=False, logprobs=None, suffix="").max_tokens == 16
    with pytest.raises(OpenAIError, match="not valid JSON"):
        CATALOGUE.read("completion", b"{", 0.0)
    error = json.loads(refusal("completion", model="llm", prompt="x", n=2).body())["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


def test_answers_have_openais_shapes() -> None:
    g = read("chat", model="llm", messages=[{"role": "user", "content": "a b"}], max_tokens=3, stream=True)
    whole = g.response("x y z")
    assert whole["object"] == "chat.completion" and whole["id"].startswith("chatcmpl-") and whole["created"] == 1000
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "x y z"} and whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert g.response("x")["choices"][0]["finish_reason"] == "stop"
    first = json.loads(g.chunk("x", first=True)[len(b"data: ") :])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"] == {"role": "assistant", "content": "x"}
    closing = json.loads(g.chunk(None, "length")[len(b"data: ") :])
    assert closing["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    usage = json.loads(g.usage_chunk(2)[len(b"data: ") :])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2
    completion = read("completion", model="llm", prompt="a", max_tokens=1)
    assert completion.response("q")["object"] == "text_completion" and completion.response("q")["choices"][0]["text"] == "q"
    assert [error_of_status(s, "m").type for s in (401, 403, 429, 503)] == ["authentication_error", "permission_error", "rate_limit_error", "server_error"]


def test_router_openai_is_parsed_and_checked() -> None:
    config = parse_config({"router": {"openai": {"chat": {"model": "llm", "stream_model": "llm_stream", "default_max_tokens": 64}}}})
    assert config.router.openai == (OpenAIModel(name="chat", model="llm", stream_model="llm_stream", default_max_tokens=64),)
    assert parse_config({}).router.openai == DEFAULT_OPENAI_MODELS
    assert parse_config({"router": {"openai": {}}}).router.openai == ()
    for openai, message in (
        ({"m": {"stream_model": "x"}}, "router.openai.m.model is required"),
        ({"m": {"model": "x", "colour": 1}}, "unknown setting(s) in router.openai.m: colour"),
        ({"m": {"model": "x", "chat_template": "{% if %}"}}, "router.openai.m.chat_template is not a valid Jinja2 template"),
        ({"m": {"model": "x", "default_max_tokens": 0}}, "default_max_tokens must be >= 1"),
        (["m"], "router.openai must map an OpenAI model name"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_config({"router": {"openai": openai}})
    # a router worker gets its section as JSON (asdict) and reads it back the same
    again = router_config(json.loads(json.dumps(asdict(config.router))))
    assert again == config.router and isinstance(again, RouterConfig)
