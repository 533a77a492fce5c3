"""OpenAI's completions and chat completions as Triton generate requests, and back: pure functions, no I/O.

A request to `/v1/completions` or `/v1/chat/completions` names an OpenAI
model; its mapping (runtime.config.OpenAIModel, `router.openai`) says which
Triton model answers it (one for unary requests, one for `stream: true`) and
which of that model's inputs take the prompt and the token count. A chat's
`messages` become the prompt through the mapping's Jinja2 chat template, in a
sandbox as Hugging Face's `apply_chat_template` runs it. The request becomes
the JSON body of Triton's generate (or generate_stream) endpoint; the
answer's text output becomes OpenAI's response, or one server-sent event per
streamed piece, closed by `data: [DONE]`.

Usage counts whitespace-separated words: the emulated models' tokens exactly
(one word is one token), and an approximation for a real model, whose own
tokenizer is not consulted. Sampling settings (temperature, top_p, stop, seed,
...) are accepted and not passed on: the emulated models have no such inputs.
What cannot be honoured (n > 1, echo, logprobs, suffix, tools) is refused, in
OpenAI's error shape like every other refusal.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import jinja2.sandbox

from ebbflow.runtime.config import OpenAIModel

Kind = Literal["completion", "chat"]
ROLES = frozenset(("system", "developer", "user", "assistant", "tool"))
UNSUPPORTED = {
    "echo": "echo is not supported",
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
    "suffix": "suffix is not supported",
    "tools": "tools are not supported",
    "functions": "functions are not supported",
}
"""Settings that would change the answer and cannot be honoured: refused when set to anything but off."""
DONE = b"data: [DONE]\n\n"


class OpenAIError(Exception):
    """A refusal in OpenAI's shape: HTTP status, message, type, the parameter at fault and a code."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> bytes:
        return json.dumps({"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}).encode()


def error_of_status(status: int, message: str) -> OpenAIError:
    """A Triton or router refusal (`{"error": message}` with an HTTP status) in OpenAI's shape."""
    if status == 401:
        return OpenAIError(status, message, "authentication_error", code="invalid_api_key")
    if status == 403:
        return OpenAIError(status, message, "permission_error")
    if status == 404:
        return OpenAIError(status, message, code="model_not_found")
    if status == 429:
        return OpenAIError(status, message, "rate_limit_error", code="rate_limit_exceeded")
    if status >= 500 or status == 499:
        return OpenAIError(status, message, "server_error")
    return OpenAIError(status, message)


def count_tokens(text: str) -> int:
    """Tokens as the emulated models count them: whitespace-separated words."""
    return len(text.split())


@dataclass(frozen=True)
class Generation:
    """One OpenAI request, read: what to ask which Triton model, and how to answer."""

    kind: Kind
    name: str
    """The OpenAI model name, as the answer repeats it."""
    triton_model: str
    stream: bool
    include_usage: bool
    max_tokens: int
    prompt_tokens: int
    body: bytes
    """The Triton generate request."""
    mapping: OpenAIModel
    id: str
    created: int

    @property
    def endpoint(self) -> str:
        return "generate_stream" if self.stream else "generate"

    # ---- answers ------------------------------------------------------------------------

    def usage(self, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": self.prompt_tokens + completion_tokens}

    def finish_reason(self, completion_tokens: int) -> str:
        return "length" if completion_tokens >= self.max_tokens else "stop"

    def response(self, text: str) -> dict[str, Any]:
        """The whole answer of a request without `stream`."""
        tokens = count_tokens(text)
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
        choice["finish_reason"] = self.finish_reason(tokens)
        return {**self._head(), "choices": [choice], "usage": self.usage(tokens)}

    def chunk(self, text: str | None, finish_reason: str | None = None, first: bool = False) -> bytes:
        """One server-sent event of a streamed answer: a piece of text, or (text None) the closing one."""
        if self.kind == "chat":
            delta: dict[str, Any] = {} if text is None else {"content": text}
            if first:
                delta = {"role": "assistant", **delta}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None}
        choice["finish_reason"] = finish_reason
        return event({**self._head(chunk=True), "choices": [choice]})

    def usage_chunk(self, completion_tokens: int) -> bytes:
        """The last event when the client asked for usage (`stream_options.include_usage`): no choices."""
        return event({**self._head(chunk=True), "choices": [], "usage": self.usage(completion_tokens)})

    def _head(self, chunk: bool = False) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.name}


def event(value: Any) -> bytes:
    return b"data: " + json.dumps(value).encode() + b"\n\n"


class Catalogue:
    """The OpenAI API's models (router.openai), their chat templates compiled once."""

    def __init__(self, models: tuple[OpenAIModel, ...]) -> None:
        self.models = {m.name: m for m in models}
        environment = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._templates = {m.name: environment.from_string(m.chat_template) for m in models}

    def listing(self, created: int) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_object(name, created) for name in self.models]}

    @staticmethod
    def model_object(name: str, created: int) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "ebbflow"}

    def read(self, kind: Kind, body: bytes, now: float) -> Generation:
        """A request body, received at `now` (Unix seconds) → the Generation it asks for; OpenAIError saying
        what is wrong with it."""
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise OpenAIError(400, f"the request body is not valid JSON: {error}") from None
        if not isinstance(request, dict):
            raise OpenAIError(400, "the request body must be a JSON object")
        name = request.get("model")
        if not isinstance(name, str) or not name:
            raise OpenAIError(400, "you must provide a model parameter", param="model")
        mapping = self.models.get(name)
        if mapping is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise OpenAIError(404, f"the model '{name[:200]}' does not exist; models served here: {served}", param="model", code="model_not_found")
        for key, message in UNSUPPORTED.items():
            if request.get(key) not in (None, False, 0, "", []):
                raise OpenAIError(400, f"{message} by model '{name}'", param=key)
        for key in ("n", "best_of"):
            if request.get(key) not in (None, 1):
                raise OpenAIError(400, f"{key} must be 1: one choice per request", param=key)
        stream = _boolean(request, "stream")
        options = request.get("stream_options")
        if options is not None and (not stream or not isinstance(options, dict)):
            raise OpenAIError(400, "stream_options is only allowed with stream: true, as an object", param="stream_options")
        include_usage = bool(options and options.get("include_usage"))
        prompt = self._prompt(kind, request, name)
        max_tokens = _max_tokens(kind, request, mapping.default_max_tokens)
        triton_model = mapping.streaming_model if stream else mapping.model
        generate = {mapping.prompt_input: prompt, mapping.max_tokens_input: max_tokens}
        created = int(now)
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return Generation(
            kind, name, triton_model, stream, include_usage, max_tokens, count_tokens(prompt),
            json.dumps(generate).encode(), mapping, f"{prefix}-{uuid.uuid4().hex}", created,
        )  # fmt: skip

    def _prompt(self, kind: Kind, request: Mapping[str, Any], name: str) -> str:
        if kind == "completion":
            prompt = request.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise OpenAIError(400, "prompt must be a string (or a list of one string); token ids and several prompts are not supported", param="prompt")
            return prompt
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise OpenAIError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
        read = [_message(i, m) for i, m in enumerate(messages)]
        try:
            return self._templates[name].render(messages=read, add_generation_prompt=True, bos_token="", eos_token="")
        except jinja2.TemplateError as error:
            raise OpenAIError(400, f"the chat template of model '{name}' failed on these messages: {error}", param="messages") from None


def _boolean(request: Mapping[str, Any], key: str) -> bool:
    value = request.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise OpenAIError(400, f"{key} must be true or false, got {json.dumps(value)[:50]}", param=key)
    return value


def _max_tokens(kind: Kind, request: Mapping[str, Any], default: int) -> int:
    key = "max_completion_tokens" if kind == "chat" and request.get("max_completion_tokens") is not None else "max_tokens"
    value = request.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OpenAIError(400, f"{key} must be a positive integer, got {json.dumps(value)[:50]}", param=key)
    return value


def _message(index: int, message: Any) -> dict[str, str]:
    """A chat message with its content as one string (text parts joined); anything else refused."""
    where = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise OpenAIError(400, f"{where} must be an object with a role among {', '.join(sorted(ROLES))}", param=where)
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIError(400, f"{where}.content: only text parts are supported", param=f"{where}.content")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise OpenAIError(400, f"{where}.content must be a string or a list of text parts", param=f"{where}.content")
    return {"role": message["role"], "content": content}
