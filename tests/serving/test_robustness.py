"""Bad input, limits, authentication and shutdown against a real server process.

Every bad request gets the right 4xx and OpenAI's error JSON, and the server keeps serving.
"""
from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from tests.serving.server import ServerProcess

MODEL = "tiny"
KEY = "sk-test-key"
CONTEXT = 256  # the tiny model's max_position_embeddings
OK_MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    srv = ServerProcess("--model", str(tiny_llama_dir), "--served-model-name", MODEL, "--max-batch-size", "2",
                        "--max-queue", "2", "--max-body-mb", "1", "--drain-timeout", "120", api_key=KEY)
    yield srv
    srv.stop()


def _chat(**fields):
    return {"model": MODEL, "messages": OK_MESSAGES, "max_tokens": 2, **fields}


# (name, method, path, body: dict | bytes | None, headers, expected status, expected param or None)
CASES = [
    ("malformed-json", "/v1/chat/completions", b'{"model": "tiny", "messages": [', {}, 400, None),
    ("binary-garbage", "/v1/chat/completions", bytes(range(256)) * 4, {}, 400, None),
    ("non-utf8", "/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}', {}, 400, None),
    ("empty-body", "/v1/chat/completions", b"", {}, 400, None),
    ("body-is-array", "/v1/chat/completions", [1, 2, 3], {}, 400, None),
    ("missing-model", "/v1/chat/completions", {"messages": OK_MESSAGES}, {}, 400, "model"),
    ("model-not-string", "/v1/chat/completions", _chat(model=5), {}, 400, "model"),
    ("unknown-model", "/v1/chat/completions", _chat(model="gpt-9"), {}, 404, "model"),
    ("missing-messages", "/v1/chat/completions", {"model": MODEL}, {}, 400, "messages"),
    ("empty-messages", "/v1/chat/completions", _chat(messages=[]), {}, 400, "messages"),
    ("messages-not-list", "/v1/chat/completions", _chat(messages="hi"), {}, 400, "messages"),
    ("message-not-object", "/v1/chat/completions", _chat(messages=["hi"]), {}, 400, "messages.[0]"),
    ("unknown-role", "/v1/chat/completions", _chat(messages=[{"role": "wizard", "content": "x"}]), {}, 400, "messages.[0].role"),
    ("missing-role", "/v1/chat/completions", _chat(messages=[{"content": "x"}]), {}, 400, "messages.[0].role"),
    ("content-wrong-type", "/v1/chat/completions", _chat(messages=[{"role": "user", "content": 12}]), {}, 400, "messages.[0].content"),
    ("image-part", "/v1/chat/completions", _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), {}, 400, "messages.[0].content"),
    ("n-zero", "/v1/chat/completions", _chat(n=0), {}, 400, "n"),
    ("n-huge", "/v1/chat/completions", _chat(n=1000), {}, 400, "n"),
    ("n-string", "/v1/chat/completions", _chat(n="3"), {}, 400, "n"),
    ("max-tokens-negative", "/v1/chat/completions", _chat(max_tokens=-1), {}, 400, "max_tokens"),
    ("max-tokens-zero", "/v1/chat/completions", _chat(max_tokens=0), {}, 400, "max_tokens"),
    ("max-tokens-huge", "/v1/chat/completions", _chat(max_tokens=10**9), {}, 400, "messages"),
    ("max-tokens-float", "/v1/chat/completions", _chat(max_tokens=2.5), {}, 400, "max_tokens"),
    ("max-completion-tokens-negative", "/v1/chat/completions", _chat(max_completion_tokens=-5), {}, 400, "max_completion_tokens"),
    ("temperature-negative", "/v1/chat/completions", _chat(temperature=-1), {}, 400, "temperature"),
    ("temperature-string", "/v1/chat/completions", _chat(temperature="hot"), {}, 400, "temperature"),
    ("top-p-2", "/v1/chat/completions", _chat(top_p=2), {}, 400, "top_p"),
    ("presence-penalty-range", "/v1/chat/completions", _chat(presence_penalty=3), {}, 400, "presence_penalty"),
    ("frequency-penalty-range", "/v1/chat/completions", _chat(frequency_penalty=-2.5), {}, 400, "frequency_penalty"),
    ("stop-wrong-type", "/v1/chat/completions", _chat(stop=5), {}, 400, "stop"),
    ("stop-too-many", "/v1/chat/completions", _chat(stop=["a", "b", "c", "d", "e"]), {}, 400, "stop"),
    ("seed-float", "/v1/chat/completions", _chat(seed=1.5), {}, 400, "seed"),
    ("stream-not-bool", "/v1/chat/completions", _chat(stream="yes"), {}, 400, "stream"),
    ("stream-options-without-stream", "/v1/chat/completions", _chat(stream_options={"include_usage": True}), {}, 400, "stream_options"),
    ("top-logprobs-without-logprobs", "/v1/chat/completions", _chat(top_logprobs=3), {}, 400, "top_logprobs"),
    ("top-logprobs-range", "/v1/chat/completions", _chat(logprobs=True, top_logprobs=50), {}, 400, "top_logprobs"),
    ("response-format-bad", "/v1/chat/completions", _chat(response_format={"type": "xml"}), {}, 400, "response_format"),
    ("unknown-field", "/v1/chat/completions", _chat(frobnicate=True), {}, 400, "frobnicate"),
    ("tools-unsupported", "/v1/chat/completions", _chat(tools=[{"type": "function", "function": {"name": "f"}}]), {}, 400, "tools"),
    ("prompt-past-context", "/v1/chat/completions", _chat(messages=[{"role": "user", "content": "word " * 400}]), {}, 400, "messages"),
    ("completion-prompt-missing", "/v1/completions", {"model": MODEL}, {}, 400, "prompt"),
    ("completion-prompt-bad-ids", "/v1/completions", {"model": MODEL, "prompt": [1, 10**9]}, {}, 400, "prompt"),
    ("completion-past-context", "/v1/completions", {"model": MODEL, "prompt": "word " * 400}, {}, 400, "prompt"),
    ("completion-logprobs-range", "/v1/completions", {"model": MODEL, "prompt": "hi", "logprobs": 9}, {}, 400, "logprobs"),
    ("embeddings-without-model", "/v1/embeddings", {"model": MODEL, "input": "hi"}, {}, 400, "model"),
    ("missing-api-key", "/v1/chat/completions", _chat(), {"Authorization": None}, 401, None),
    ("wrong-api-key", "/v1/chat/completions", _chat(), {"Authorization": "Bearer nope"}, 401, None),
    ("models-wrong-api-key", "/v1/models", None, {"Authorization": "Bearer nope"}, 401, None),
    ("unknown-route", "/v1/nothing-here", _chat(), {}, 404, None),
    ("wrong-method", "/v1/chat/completions", None, {}, 405, None),
    ("body-10mb", "/v1/chat/completions", b"x" * (10 * 1024 * 1024), {}, 413, None),
]


def _send(server, path, body, headers):
    h = dict(server.headers)
    for k, v in headers.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    if body is None:
        return httpx.get(server.base + path, headers=h, timeout=30)
    if isinstance(body, bytes):
        return httpx.post(server.base + path, content=body, headers={**h, "Content-Type": "application/json"}, timeout=30)
    return httpx.post(server.base + path, json=body, headers=h, timeout=30)


@pytest.mark.parametrize("name,path,body,headers,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, name, path, body, headers, status, param):
    response = _send(server, path, body, headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if name == "prompt-past-context":
        assert "maximum context length is 256 tokens" in error["message"] and error["code"] == "context_length_exceeded"
    # the server still serves
    ok = httpx.post(server.base + "/v1/chat/completions", json=_chat(), headers=server.headers, timeout=30)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] is not None


def test_health_needs_no_key_and_metrics_do(server):
    assert httpx.get(server.base + "/health").status_code == 200
    assert httpx.get(server.base + "/metrics").status_code == 401
    assert httpx.get(server.base + "/metrics", headers=server.headers).status_code == 200


def test_queue_limit_answers_429_with_retry_after(server):
    # 2 slots and at most 2 waiting: of 12 long requests at once, some must be turned away
    results = []

    def ask():
        r = httpx.post(server.base + "/v1/chat/completions", json=_chat(max_tokens=60, temperature=0),
                       headers=server.headers, timeout=60)
        results.append(r)

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
    limited = next(r for r in results if r.status_code == 429)
    assert limited.headers["Retry-After"] == "1" and limited.json()["error"]["type"] == "rate_limit_error"


def test_sigterm_drains_and_exits_0(server):
    """Last in this module: SIGTERM under a running stream -> new requests 503, the stream ends with [DONE], exit 0."""
    # a long answer (200 tokens), so the stream is still running after SIGTERM even on a fast idle machine
    lines: list[str] = []

    def stream():
        with httpx.stream("POST", server.base + "/v1/chat/completions", headers=server.headers, timeout=60,
                          json=_chat(max_tokens=200, temperature=0, stream=True)) as r:
            lines.extend(line for line in r.iter_lines() if line)

    t = threading.Thread(target=stream)
    t.start()
    for _ in range(200):  # wait until the stream is running
        if httpx.get(server.base + "/health").json()["running"]:
            break
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    late = httpx.post(server.base + "/v1/chat/completions", json=_chat(), headers=server.headers, timeout=30)
    assert late.status_code == 503 and late.json()["error"]["code"] == "server_shutting_down"
    assert httpx.get(server.base + "/health").status_code == 503
    t.join(timeout=120)
    assert lines and lines[-1] == "data: [DONE]", lines[-2:]
    assert server.proc.wait(timeout=60) == 0
