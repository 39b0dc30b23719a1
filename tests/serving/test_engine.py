"""The continuous-batching engine against ``generate()``: same tokens, whatever else is in the batch."""
from __future__ import annotations

import threading

import pytest
import torch

from openformers import AutoModelForCausalLM, AutoTokenizer
from openformers.serving import Engine, SamplingParams
from openformers.serving.cache import SlotCache
from openformers.serving.json_mode import START, run
from tests.serving.conftest import EngineEvents


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir)


def _prompts(tokenizer, n: int) -> list[list[int]]:
    # different lengths (3 to ~60 tokens) so slots of different lengths decode side by side
    return [tokenizer(f"Prompt {i}: " + "word " * (i * 3) + "end")["input_ids"] for i in range(n)]


def _run_all(engine: Engine, prompts: list[list[int]], params: list[SamplingParams], stagger: bool = False):
    collected = EngineEvents(len(prompts))
    for i, (p, sp) in enumerate(zip(prompts, params)):
        engine.submit(p, sp, collected.sink_for(i))
        if stagger and i % 3 == 0:
            threading.Event().wait(0.02)  # requests join a batch already decoding
    return collected.wait(120)


@pytest.fixture(scope="module")
def engine(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    eng = Engine(model, tokenizer, max_batch_size=6, prefill_chunk=24)  # fewer slots than requests; chunked prefill
    eng.start()
    yield eng
    eng.stop()


def test_greedy_matches_generate_for_16_prompts_at_once(engine, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = _prompts(tokenizer, 16)
    max_tokens = [8 + (i % 5) * 3 for i in range(16)]  # requests leave the batch at different steps
    events = _run_all(engine, prompts, [SamplingParams(max_tokens=m, temperature=0) for m in max_tokens], stagger=True)
    for i, p in enumerate(prompts):
        ref = model.generate(torch.tensor([p]), max_new_tokens=max_tokens[i], do_sample=False)[0, len(p):].tolist()
        got = [e.token_id for e in events[i]]
        assert got == ref, f"prompt {i}"
        assert events[i][-1].finish_reason in ("length", "stop")
    assert engine.free_slots == set(range(6)) and not engine.running


def test_sampling_with_seed_matches_generate(engine, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = _prompts(tokenizer, 16)
    params = [SamplingParams(max_tokens=10, temperature=0.7 + 0.05 * (i % 4), top_p=0.9, seed=100 + i) for i in range(16)]
    events = _run_all(engine, prompts, params)
    for i, p in enumerate(prompts):
        sp = params[i]
        ref = model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=True, temperature=sp.temperature,
                             top_p=sp.top_p, top_k=0, generator=torch.Generator().manual_seed(sp.seed))[0, len(p):].tolist()
        assert [e.token_id for e in events[i]] == ref, f"prompt {i}"
    # the same seed again gives the same tokens
    again = _run_all(engine, prompts[:2], params[:2])
    assert [e.token_id for e in again[0]] == [e.token_id for e in events[0]]


def test_prefix_reuse_gives_the_same_tokens(engine, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    system = tokenizer("You are a helpful assistant. " * 4)["input_ids"]
    prompts = [system + tokenizer(f" question {i}?")["input_ids"] for i in range(4)]
    first = _run_all(engine, prompts[:1], [SamplingParams(max_tokens=6, temperature=0)])
    rest = {}
    for i in range(1, 4):
        rest[i] = _run_all(engine, [prompts[i]], [SamplingParams(max_tokens=6, temperature=0)])[0]
    reused = [engine.slot_tokens]  # the slots kept the system prompt
    assert any(toks[: len(system)] == system for toks in reused[0])
    for i, evs in [(0, first[0])] + list(rest.items()):
        ref = model.generate(torch.tensor([prompts[i]]), max_new_tokens=6, do_sample=False)[0, len(prompts[i]):].tolist()
        assert [e.token_id for e in evs] == ref


def test_stop_strings_cancel_and_json(engine, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt = _prompts(tokenizer, 3)[2]
    full = _run_all(engine, [prompt], [SamplingParams(max_tokens=20, temperature=0)])[0]
    text = "".join(e.text for e in full)
    assert len(text) > 6
    stop = text[3:6]
    cut = _run_all(engine, [prompt], [SamplingParams(max_tokens=20, temperature=0, stop=[stop])])[0]
    assert "".join(e.text for e in cut) == text[: text.find(stop)]
    assert cut[-1].finish_reason == "stop"
    # cancel: the slot comes back and the request ends with "cancelled"
    got = []
    req = engine.submit(prompt, SamplingParams(max_tokens=200, temperature=0), got.append)
    engine.cancel(req)
    for _ in range(200):
        if got and got[-1].finish_reason:
            break
        threading.Event().wait(0.01)
    assert got[-1].finish_reason == "cancelled"
    # JSON mode: the output is a prefix of a JSON object (complete when it stopped on EOS)
    js = _run_all(engine, [prompt], [SamplingParams(max_tokens=30, temperature=0.9, seed=3, json_object=True)])[0]
    out = "".join(e.text for e in js)
    state = run(START, out)
    assert state is not None, out
    if js[-1].finish_reason == "stop":
        import json
        assert isinstance(json.loads(out), dict)


def test_slot_cache_rows_of_different_lengths(model_and_tokenizer):
    """One batched decode step over slots of different lengths gives each row's own logits."""
    model, tokenizer = model_and_tokenizer
    prompts = [tokenizer("a b c")["input_ids"], tokenizer("one two three four five six seven")["input_ids"]]
    cache = SlotCache(num_slots=4, max_len=64, initial_capacity=8)  # capacity grows during the test
    slots = [3, 1]  # not consecutive, not in order
    with torch.inference_mode():
        for slot, p in zip(slots, prompts):
            cache.bind([slot], [0], len(p))
            model(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                  position_ids=torch.arange(len(p))[None], past_key_values=cache, use_cache=True)
        lens = torch.tensor([len(p) for p in prompts])
        cache.bind(slots, lens.tolist(), 1)
        nxt = torch.tensor([[5], [7]])
        mask = (torch.arange(int(lens.max()) + 1)[None] <= lens[:, None]).long()
        batched = model(input_ids=nxt, attention_mask=mask, position_ids=lens[:, None], past_key_values=cache,
                        use_cache=True).logits[:, -1]
        for row, p in enumerate(prompts):
            alone = model(input_ids=torch.tensor([p + [int(nxt[row, 0])]])).logits[0, -1]
            torch.testing.assert_close(batched[row], alone, rtol=1e-4, atol=1e-5)


def test_rows_of_one_length_decode_without_a_mask(engine, model_and_tokenizer):
    """Prompts of the same length decode in step (no mask: the plain causal path) and still match generate()."""
    model, tokenizer = model_and_tokenizer
    base = tokenizer("alpha beta gamma")["input_ids"]
    prompts = [base + [t] for t in (500, 1500, 2500)]
    assert len({len(p) for p in prompts}) == 1
    events = _run_all(engine, prompts, [SamplingParams(max_tokens=6, temperature=0)] * 3)
    for i, p in enumerate(prompts):
        ref = model.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False)[0, len(p):].tolist()
        assert [e.token_id for e in events[i]] == ref


def test_prompts_are_prefilled_together_in_chunks(model_and_tokenizer):
    """Waiting prompts of different lengths go through prefill as one left-padded batch (a long one over
    several turns, beside decode steps of the others) and still give generate()'s tokens."""
    model, tokenizer = model_and_tokenizer
    prompts = [tokenizer("short one")["input_ids"], tokenizer("a middle sized prompt " * 3)["input_ids"],
               tokenizer("a long prompt that needs more than one chunk " * 6)["input_ids"], tokenizer("tiny")["input_ids"]]
    assert len(prompts[2]) > 40
    shapes = []
    handle = model.register_forward_pre_hook(lambda m, args, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                             with_kwargs=True)
    eng = Engine(model, tokenizer, max_batch_size=4, prefill_chunk=40)
    try:
        threading.Timer(0.3, eng.start).start()  # all four are waiting at the engine's first turn
        events = _run_all(eng, prompts, [SamplingParams(max_tokens=7, temperature=0)] * 4)
    finally:
        eng.stop()
        handle.remove()
    assert any(b > 1 and q > 1 for b, q in shapes), shapes  # several prompts in one prefill forward
    assert all(b * q <= 80 for b, q in shapes), shapes  # chunked: the padded batch stays within twice the chunk
    for i, p in enumerate(prompts):
        ref = model.generate(torch.tensor([p]), max_new_tokens=7, do_sample=False)[0, len(p):].tolist()
        assert [e.token_id for e in events[i]] == ref, f"prompt {i}"
