"""A real ``openformers serve`` process, driven with the official ``openai`` client and httpx."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from openformers import AutoModelForCausalLM, AutoTokenizer
from openformers.serving.json_mode import START, run
from tests.serving.server import ServerProcess

openai = pytest.importorskip("openai")
MODEL = "tiny"


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    srv = ServerProcess("--model", str(tiny_llama_dir), "--served-model-name", MODEL, "--max-batch-size", "8",
                        "--embedding-model", "minilm", "--prefill-chunk", "64")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir)


def _chat_ids(tokenizer, messages):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return ids["input_ids"] if hasattr(ids, "keys") else list(ids)


def _messages(i: int):
    return [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"Question number {i}: " + "tell me more " * (i % 5)}]


def _generate(model, ids, max_new_tokens, **kw):
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, **kw)[0, len(ids):].tolist()
    eos = model.generation_config.eos_token_id
    return out[: out.index(eos) + 1] if eos in out else out


def test_models(server):
    ids = [m.id for m in server.openai().models.list().data]
    assert ids == [MODEL, "minilm"]


@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "seeded-sampling"])
def test_16_concurrent_chats_equal_generate(server, local, sampling):
    model, tokenizer = local
    client = server.openai()

    top_p = [1.0, 0.95]  # half the requests with nucleus sampling

    def max_tokens(i):
        return (4 + i % 3) if sampling else (6 + i % 7)  # requests leave the batch at different steps

    def ask(i):
        kw = dict(temperature=0.8, top_p=top_p[i % 2], seed=1000 + i) if sampling else dict(temperature=0)
        return client.chat.completions.create(model=MODEL, messages=_messages(i), max_tokens=max_tokens(i), **kw)

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(ask, range(16)))
    for i, reply in enumerate(replies):
        ids = _chat_ids(tokenizer, _messages(i))
        kw = (dict(do_sample=True, temperature=0.8, top_p=top_p[i % 2], top_k=0,
                   generator=torch.Generator().manual_seed(1000 + i)) if sampling else dict(do_sample=False))
        ref = _generate(model, ids, max_tokens(i), **kw)
        assert reply.usage.prompt_tokens == len(ids)
        assert reply.usage.completion_tokens == len(ref)
        assert reply.choices[0].message.content == tokenizer.decode(ref, skip_special_tokens=True), f"prompt {i}"
        assert reply.choices[0].finish_reason == ("stop" if ref[-1] == tokenizer.eos_token_id else "length")


def test_streaming_matches_non_streaming_and_ends_with_done(server):
    client = server.openai()
    msgs = _messages(3)
    full = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    # raw SSE: "data: ..." events, the last one [DONE]
    with httpx.stream("POST", server.base + "/v1/chat/completions", json={
            "model": MODEL, "messages": msgs, "max_tokens": 5, "stream": True}, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_n_seed_stop_logprobs(server, local):
    model, tokenizer = local
    client = server.openai()
    msgs = _messages(5)
    ids = _chat_ids(tokenizer, msgs)
    reply = client.chat.completions.create(model=MODEL, messages=msgs, n=3, max_tokens=8, seed=7, temperature=1.0)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for i, choice in enumerate(reply.choices):  # choice i samples with seed + i
        ref = _generate(model, ids, 8, do_sample=True, top_k=0, generator=torch.Generator().manual_seed(7 + i))
        assert choice.message.content == tokenizer.decode(ref, skip_special_tokens=True)
    assert reply.usage.completion_tokens == 3 * 8 or reply.choices[0].finish_reason == "stop"
    greedy = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=16, temperature=0).choices[0].message.content
    stop = greedy[4:7]
    for form in (stop, [stop, "zzzz-never"]):
        cut = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=16, temperature=0, stop=form)
        assert cut.choices[0].message.content == greedy[: greedy.find(stop)]
        assert cut.choices[0].finish_reason == "stop"
    lp = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, temperature=0, logprobs=True,
                                        top_logprobs=3).choices[0].logprobs.content
    assert len(lp) == 4
    for item in lp:
        assert len(item.top_logprobs) == 3 and item.logprob <= 0
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob)  # greedy took the most likely token
    # the logprob is the model's own log-softmax
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    assert lp[0].logprob == pytest.approx(float(torch.log_softmax(logits, -1).max()), abs=1e-4)


def test_json_mode_output_is_json(server):
    client = server.openai()
    for seed in range(2):
        reply = client.chat.completions.create(model=MODEL, messages=_messages(seed), max_tokens=24, seed=seed,
                                               response_format={"type": "json_object"})
        text = reply.choices[0].message.content
        assert run(START, text) is not None, text  # a valid JSON prefix at any point
        if reply.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict)


def test_completions(server, local):
    model, tokenizer = local
    client = server.openai()
    ids = tokenizer("Once upon a time")["input_ids"]
    ref = _generate(model, ids, 7, do_sample=False)
    reply = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=7, temperature=0, logprobs=2)
    assert reply.choices[0].text == tokenizer.decode(ref, skip_special_tokens=True)
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == len(ref)
    assert len(reply.choices[0].logprobs.tokens) == len(ref) and len(reply.choices[0].logprobs.top_logprobs[0]) == 2
    # token-id prompts, several prompts, echo, streaming
    many = client.completions.create(model=MODEL, prompt=[ids, ids[:3]], max_tokens=7, temperature=0)
    assert [c.index for c in many.choices] == [0, 1] and many.choices[0].text == reply.choices[0].text
    echo = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=7, temperature=0, echo=True)
    assert echo.choices[0].text == "Once upon a time" + reply.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=7, temperature=0, stream=True) if c.choices)
    assert streamed == reply.choices[0].text


def test_penalties_change_the_output(server):
    client = server.openai()
    kw = dict(model=MODEL, messages=_messages(1), max_tokens=24, temperature=0)
    plain = client.chat.completions.create(**kw).choices[0].message.content
    # the tiny random model hardly repeats itself; a negative penalty makes it (score += 2 for tokens seen)
    penalised = client.chat.completions.create(frequency_penalty=-2.0, presence_penalty=-2.0, **kw)
    text = penalised.choices[0].message.content
    assert text != plain
    assert penalised.usage.completion_tokens > len(set(penalised.choices[0].message.content.split())) or text != plain


def test_embeddings_match_mean_pooled_bert(server):
    import transformers

    import openformers

    path = openformers.embedded_model_path("minilm")
    texts = ["The cat sits on the mat.", "A completely different sentence about finance and markets."]
    reply = server.openai().embeddings.create(model="minilm", input=texts)
    got = torch.tensor([d.embedding for d in reply.data])
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ref_model = transformers.AutoModel.from_pretrained(path).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert reply.usage.prompt_tokens == int(batch["attention_mask"].sum())
    b64 = httpx.post(server.base + "/v1/embeddings", json={"model": "minilm", "input": texts[0], "encoding_format": "base64"},
                     timeout=30).json()
    import base64

    import numpy as np

    vec = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, ref[0].numpy(), atol=1e-4)


def test_disconnect_frees_the_slot_and_metrics(server):
    body = {"model": MODEL, "messages": _messages(2), "max_tokens": 200, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    # the client went away: its request is cancelled and nothing is left running
    for _ in range(100):
        health = httpx.get(server.base + "/health").json()
        if health["running"] == 0 and health["waiting"] == 0:
            break
        time.sleep(0.05)
    assert health["running"] == 0
    text = httpx.get(server.base + "/metrics").text
    for name in ("openformers_http_requests_total", "openformers_generation_tokens_total", "openformers_queue_length",
                 "openformers_batch_size_bucket", "openformers_time_to_first_token_seconds_bucket",
                 "openformers_inter_token_latency_seconds_count"):
        assert name in text
    assert 'finish_reason="cancelled"' in text
