"""OpenAI request validation and error shapes.

Requests are checked field by field here (not by a schema library) so that every mistake gets
OpenAI's error JSON, ``{"error": {"message", "type", "param", "code"}}``, with a message naming the
field and the accepted values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from openformers.serving.engine import SamplingParams

_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
    405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
    429: "rate_limit_error", 500: "server_error", 503: "service_unavailable",
}


class APIError(Exception):
    """An error answered with ``status`` and OpenAI's error JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def _bad(message: str, param: str | None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


def _type_name(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number", str: "string",
                                           list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"'{name}' must be a number between {lo} and {hi}, got {_type_name(value)} {value!r}", name)
    if not lo <= value <= hi:
        raise _bad(f"{value} is out of range for '{name}': it must be between {lo} and {hi}", name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{name}' must be an integer, got {_type_name(value)} {value!r}", name)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise _bad(f"{value} is out of range for '{name}': it must be {bound}", name)
    return value


def _boolean(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"'{name}' must be a boolean, got {_type_name(value)} {value!r}", name)
    return value


def _stop(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _bad("'stop' must be a string or an array of up to 4 strings", "stop")
    if len(value) > 4:
        raise _bad(f"'stop' takes at most 4 sequences, got {len(value)}", "stop")
    if any(s == "" for s in value):
        raise _bad("'stop' sequences must not be empty strings", "stop")
    return value


def _unknown(body: dict, known: set[str], endpoint: str) -> None:
    extra = sorted(set(body) - known)
    if extra:
        raise _bad(f"Unrecognized request argument supplied to {endpoint}: {', '.join(extra)}", extra[0],
                   "unknown_parameter")


def _unsupported(body: dict) -> None:
    if body.get("logit_bias"):
        raise _bad("'logit_bias' is not supported by this server; leave it out", "logit_bias")
    for name in ("tools", "functions"):
        if body.get(name):
            raise _bad(f"'{name}' (tool calling) is not supported by this server; leave it out", name)


@dataclass
class GenerationRequest:
    """A validated chat or completion request."""

    model: str
    prompts: list[list[int]]  # one prompt for chat; one or more for completions
    params: SamplingParams
    max_tokens_given: bool
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    echo: bool = False
    prompt_texts: list[str] | None = None


_COMMON = {"model", "stream", "stream_options", "n", "temperature", "top_p", "max_tokens", "stop", "seed",
           "presence_penalty", "frequency_penalty", "logprobs", "user", "logit_bias"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "top_logprobs", "response_format", "tools", "tool_choice",
                         "functions", "function_call", "parallel_tool_calls", "store", "metadata", "service_tier"}
COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "best_of", "suffix"}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
_ROLES = {"system", "developer", "user", "assistant", "tool"}


def require_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _bad(f"the request body must be a JSON object, got {_type_name(body)}", None)
    return body


def require_model(body: dict, served: list[str]) -> str:
    model = body.get("model")
    if model is None:
        raise _bad("you must provide a model parameter", "model")
    if not isinstance(model, str):
        raise _bad(f"'model' must be a string, got {_type_name(model)}", "model")
    if model not in served:
        raise APIError(404, f"The model '{model}' does not exist. This server serves: {', '.join(served)}", "model",
                       "model_not_found")
    return model


def _stream_options(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise _bad("'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
    if not stream:
        raise _bad("'stream_options' is only allowed when 'stream' is true", "stream_options")
    extra = set(options) - {"include_usage", "include_obfuscation"}
    if extra:
        raise _bad(f"unknown 'stream_options' fields: {', '.join(sorted(extra))}", "stream_options")
    return _boolean(options, "include_usage", False)


def _sampling(body: dict, max_tokens: int, logprobs: int | None, json_object: bool) -> SamplingParams:
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:
        temperature = 0.0  # nothing but the most likely token survives: greedy
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad(f"'seed' must be an integer, got {_type_name(seed)} {seed!r}", "seed")
    if seed is not None and not -(2**63) <= seed < 2**64:
        raise _bad("'seed' must fit in 64 bits", "seed")
    return SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        seed=None if seed is None else seed % (2**63),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        stop=_stop(body), logprobs=logprobs, json_object=json_object,
    )


def _max_tokens(body: dict, names: tuple[str, ...], prompt_len: int, max_len: int, default: int | None,
                what: str) -> tuple[int, bool]:
    given = None
    for name in names:
        value = _integer(body, name, None, 1)
        if value is not None:
            given = value
    room = max_len - prompt_len
    if given is None:
        if room < 1:
            raise _context_error(max_len, prompt_len, 1, what)
        return (min(default, room) if default is not None else room), False
    if prompt_len + given > max_len:
        raise _context_error(max_len, prompt_len, given, what)
    return given, True


def _context_error(max_len: int, prompt_len: int, completion: int, what: str) -> APIError:
    return _bad(
        f"This model's maximum context length is {max_len} tokens. However, you requested {prompt_len + completion} "
        f"tokens ({prompt_len} in the {what}, {completion} in the completion). Please reduce the length of the {what} "
        "or completion.", "messages" if what == "messages" else "prompt", "context_length_exceeded")


def _message_text(message: Any, index: int) -> dict[str, str]:
    param = f"messages.[{index}]"
    if not isinstance(message, dict):
        raise _bad(f"{param} must be an object with 'role' and 'content', got {_type_name(message)}", param)
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise _bad(f"{param}.role must be one of {', '.join(sorted(_ROLES))}, got {role!r}", f"{param}.role")
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"{param}.content[{j}] must be a text part {{\"type\": \"text\", \"text\": ...}}; "
                           "this server reads text only", f"{param}.content")
            parts.append(part["text"])
        content = "".join(parts)
    if content is None and role == "assistant":
        content = ""
    if not isinstance(content, str):
        raise _bad(f"{param}.content must be a string or an array of text parts, got {_type_name(content)}",
                   f"{param}.content")
    out = {"role": "system" if role == "developer" else role, "content": content}
    return out


def parse_chat(body: dict, served: list[str], tokenizer: Any, max_len: int, max_n: int) -> GenerationRequest:
    _unknown(body, CHAT_FIELDS, "chat completions")
    model = require_model(body, served)
    _unsupported(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array of {\"role\", \"content\"} objects", "messages")
    chat = [_message_text(m, i) for i, m in enumerate(messages)]
    stream = _boolean(body, "stream", False)
    include_usage = _stream_options(body, stream)
    n = _integer(body, "n", 1, 1, max_n)
    want_logprobs = _boolean(body, "logprobs", False)
    top = _integer(body, "top_logprobs", None, 0, 20)
    if top is not None and not want_logprobs:
        raise _bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    fmt = body.get("response_format")
    json_object = False
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object"):
            raise _bad("'response_format' must be {\"type\": \"text\"} or {\"type\": \"json_object\"}"
                       + (" (json_schema is not supported)" if kind == "json_schema" else ""), "response_format")
        json_object = kind == "json_object"
    try:
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    except Exception as exc:  # a template that rejects this conversation (e.g. roles out of order)
        raise _bad(f"the chat template could not format these messages: {exc}", "messages") from exc
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    ids = [int(i) for i in ids]
    max_tokens, given = _max_tokens(body, ("max_tokens", "max_completion_tokens"), len(ids), max_len, None, "messages")
    params = _sampling(body, max_tokens, (top or 0) if want_logprobs else None, json_object)
    return GenerationRequest(model, [ids], params, given, n, stream, include_usage, want_logprobs)


def parse_completion(body: dict, served: list[str], tokenizer: Any, max_len: int, max_n: int) -> GenerationRequest:
    _unknown(body, COMPLETION_FIELDS, "completions")
    model = require_model(body, served)
    _unsupported(body)
    if body.get("suffix") is not None:
        raise _bad("'suffix' (insertion) is not supported by this server", "suffix")
    prompt = body.get("prompt")
    texts: list[str] | None = None
    if isinstance(prompt, str):
        texts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        texts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompts = [list(prompt)]
    elif (isinstance(prompt, list) and prompt and all(isinstance(p, list) and p for p in prompt)
          and all(isinstance(t, int) and not isinstance(t, bool) for p in prompt for t in p)):
        prompts = [list(p) for p in prompt]
    else:
        raise _bad("'prompt' must be a string, an array of strings, an array of token ids or an array of such arrays "
                   "(none empty)", "prompt")
    if texts is not None:
        prompts = [tokenizer(t)["input_ids"] for t in texts]
        if any(len(p) == 0 for p in prompts):
            raise _bad("'prompt' must not be empty", "prompt")
    vocab = len(tokenizer)
    for p in prompts:
        bad = [t for t in p if not 0 <= t < vocab]
        if bad:
            raise _bad(f"'prompt' holds token ids outside the vocabulary [0, {vocab}): {bad[:5]}", "prompt")
    stream = _boolean(body, "stream", False)
    include_usage = _stream_options(body, stream)
    n = _integer(body, "n", 1, 1, max_n)
    best_of = _integer(body, "best_of", None, 1)
    if best_of is not None and best_of != n:
        raise _bad("'best_of' other than 'n' is not supported by this server", "best_of")
    logprobs = _integer(body, "logprobs", None, 0, 5)
    echo = _boolean(body, "echo", False)
    if echo and logprobs is not None:
        raise _bad("'echo' with 'logprobs' (prompt logprobs) is not supported by this server", "echo")
    if len(prompts) * n > max_n:
        raise _bad(f"{len(prompts)} prompts x n={n} is more than the {max_n} sequences one request may ask for", "n")
    longest = max(len(p) for p in prompts)
    max_tokens, given = _max_tokens(body, ("max_tokens",), longest, max_len, 16, "prompt")
    params = _sampling(body, max_tokens, logprobs, False)
    if texts is None:
        texts = [tokenizer.decode(p) for p in prompts] if echo else None
    return GenerationRequest(model, prompts, params, given, n, stream, include_usage, logprobs is not None, echo, texts)


def parse_embedding(body: dict, served: list[str], tokenizer: Any, max_len: int) -> tuple[str, list[list[int]], str]:
    _unknown(body, EMBEDDING_FIELDS, "embeddings")
    model = require_model(body, served)
    value = body.get("input")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _bad("'input' must be a string, an array of strings or an array of token id arrays (not empty)", "input")
    if len(value) > 2048:
        raise _bad(f"'input' holds {len(value)} items; at most 2048 per request", "input")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        value = [value]
    ids: list[list[int]] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise _bad(f"'input[{i}]' is an empty string", "input")
            ids.append(tokenizer(item, truncation=True, max_length=max_len)["input_ids"])
        elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            if any(not 0 <= t < len(tokenizer) for t in item):
                raise _bad(f"'input[{i}]' holds token ids outside the vocabulary [0, {len(tokenizer)})", "input")
            if len(item) > max_len:
                raise _bad(f"'input[{i}]' has {len(item)} tokens; the embedding model takes at most {max_len}", "input")
            ids.append(item)
        else:
            raise _bad(f"'input[{i}]' must be a non-empty string or array of token ids, got {_type_name(item)}", "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _bad("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    if body.get("dimensions") is not None:
        raise _bad("'dimensions' is not supported by this server (the model's size is used)", "dimensions")
    return model, ids, encoding
