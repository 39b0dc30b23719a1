"""text-generation parity with transformers' pipeline on a tiny random Llama (greedy decoding)."""
from __future__ import annotations

import pytest

from openformers import pipeline

from .helpers import assert_same, hf_pipeline

PROMPTS = ["Hello, my name is", "the weather today", "once upon a time there was a very long story about"]
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is the capital of france?"}]


@pytest.fixture(scope="module")
def pair(tiny_dirs):
    return (pipeline("text-generation", model=str(tiny_dirs["lm"])),
            hf_pipeline("text-generation", model=str(tiny_dirs["lm"])))


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 6}, {"max_new_tokens": 5, "return_full_text": False},
                                    {"max_length": 18}, {"max_new_tokens": 4, "return_tensors": True},
                                    {"max_new_tokens": 4, "num_beams": 3, "num_return_sequences": 2},
                                    {"max_new_tokens": 5, "repetition_penalty": 1.5, "no_repeat_ngram_size": 2}])
def test_prompts(pair, kwargs):
    ours, theirs = pair
    assert_same(ours(PROMPTS[0], do_sample=False, **kwargs), theirs(PROMPTS[0], do_sample=False, **kwargs))
    expected = [theirs(p, do_sample=False, **kwargs) for p in PROMPTS]
    for bs in (1, 3):
        assert_same(ours(PROMPTS, batch_size=bs, do_sample=False, **kwargs), expected)


@pytest.mark.parametrize("kwargs", [{}, {"return_full_text": False}])
def test_chat(pair, kwargs):
    ours, theirs = pair
    assert_same(ours(CHAT, max_new_tokens=6, do_sample=False, **kwargs),
                theirs(CHAT, max_new_tokens=6, do_sample=False, **kwargs))
    chats = [CHAT, [{"role": "user", "content": "hi"}]]
    expected = [theirs(c, max_new_tokens=6, do_sample=False, **kwargs) for c in chats]
    assert_same(ours(chats, max_new_tokens=6, do_sample=False, batch_size=2, **kwargs), expected)
    # a final assistant message is continued, not answered
    prefill = CHAT + [{"role": "assistant", "content": "it is"}]
    assert_same(ours(prefill, max_new_tokens=4, do_sample=False), theirs(prefill, max_new_tokens=4, do_sample=False))


def test_sampling_is_seeded(pair):
    import torch

    ours, _ = pair
    torch.manual_seed(0)
    a = ours(PROMPTS[0], do_sample=True, top_k=50, temperature=0.9, max_new_tokens=8)
    torch.manual_seed(0)
    b = ours(PROMPTS[0], do_sample=True, top_k=50, temperature=0.9, max_new_tokens=8)
    assert a == b


def test_streamer(pair):
    from openformers import TextIteratorStreamer

    ours, _ = pair
    streamer = TextIteratorStreamer(ours.tokenizer, skip_prompt=True)
    import threading

    result = {}
    thread = threading.Thread(target=lambda: result.update(out=ours(PROMPTS[1], max_new_tokens=6, do_sample=False,
                                                                     streamer=streamer)))
    thread.start()
    pieces = list(streamer)
    thread.join()
    full = result["out"][0]["generated_text"]
    assert "".join(pieces).strip() == full[len(PROMPTS[1]):].strip()


def test_generator_input_streams_in_order(pair):
    ours, theirs = pair
    fed = []

    def prompts():
        for p in PROMPTS:
            fed.append(p)
            yield p

    it = ours(prompts(), max_new_tokens=3, do_sample=False)
    first = next(it)
    assert len(fed) == 1  # batch_size 1: results stream before the generator is drained
    rest = list(it)
    expected = [theirs(p, max_new_tokens=3, do_sample=False) for p in PROMPTS]
    assert_same([first] + rest, expected)


def test_reference_defaults_sample(pair):
    """No generation settings: both sample (do_sample=True, temperature 0.7) with the same seeded draws,
    so num_return_sequences=2 works as written."""
    import torch

    ours, theirs = pair
    torch.manual_seed(0)
    expected = theirs(PROMPTS[0], num_return_sequences=2, max_new_tokens=6)
    torch.manual_seed(0)
    got = ours(PROMPTS[0], num_return_sequences=2, max_new_tokens=6)
    assert len(got) == 2
    assert_same(got, expected)
