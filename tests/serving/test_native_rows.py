"""The runtime's native decode step over the engine's slot cache (rows at positions of their own): the same
greedy tokens as ``generate()`` for each prompt, float32, bfloat16 and kept 4-bit weights, and the step is
really taken (not the module path)."""
from __future__ import annotations

import threading

import pytest
import torch

from openformers import AutoModelForCausalLM, AutoTokenizer
from openformers.runtime import int4_native
from openformers.runtime.decode import _rows_of
from openformers.runtime.native_step import NativeStep
from openformers.serving import Engine, SamplingParams
from openformers.serving.cache import SlotCache
from tests.serving.conftest import EngineEvents, build_tiny_llama

pytestmark = pytest.mark.skipif(not int4_native.fast(), reason="the native kernel is not built or not used on this CPU")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Llama whose sizes the native 4-bit kernel reads (columns a multiple of 64)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-64"), hidden_size=64, intermediate_size=128,
                            initializer_range=0.2)


@pytest.fixture(scope="module")
def models(model_dir, tmp_path_factory):
    from openformers.export.gguf import save_gguf
    from openformers.quantization import GGUFQuantizationConfig
    from openformers.quantization.gguf_linear import QuantizedLinear

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fp32 = AutoModelForCausalLM.from_pretrained(model_dir)
    bf16 = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16)
    gguf = save_gguf(fp32, tmp_path_factory.mktemp("tiny-gguf-64") / "tiny-q4_0.gguf", tokenizer, "q4_0")
    q4 = AutoModelForCausalLM.from_pretrained(str(gguf), quantization_config=GGUFQuantizationConfig())
    assert any(isinstance(m, QuantizedLinear) for m in q4.modules())
    return {"float32": fp32, "bfloat16": bf16, "q4_0": q4}, tokenizer


@pytest.fixture
def spy(monkeypatch):
    """How many decode steps ran natively over rows at different positions (and over how many rows)."""
    taken: list[tuple[int, int]] = []  # (batch, distinct lengths)
    original = NativeStep.rows

    def rows(self, hidden, cos, sin, buffers, slots, lengths):
        out = original(self, hidden, cos, sin, buffers, slots, lengths)
        if out is not None:
            taken.append((hidden.shape[0], len(set(lengths.tolist()))))
        return out

    monkeypatch.setattr(NativeStep, "rows", rows)
    return taken


@pytest.mark.parametrize("kind", ["float32", "bfloat16", "q4_0"])
def test_native_rows_greedy_equals_generate(models, spy, kind):
    by_kind, tokenizer = models
    model = by_kind[kind]
    prompts = [tokenizer(f"Prompt {i}: " + "word " * (3 + 7 * i) + "end")["input_ids"] for i in range(7)]
    max_tokens = [10 + 3 * (i % 4) for i in range(7)]
    engine = Engine(model, tokenizer, max_batch_size=8, prefill_chunk=48)
    collected = EngineEvents(len(prompts))
    events = collected.events

    def submit(i):
        engine.submit(prompts[i], SamplingParams(max_tokens=max_tokens[i], temperature=0, ignore_eos=True),
                      collected.sink_for(i))

    for i in range(4):  # queued before the engine runs: they decode together, at 4 different lengths
        submit(i)
    engine.start()
    try:
        for _ in range(3000):  # the rest join once the first batch decodes (whatever the machine's speed)
            if events[0]:
                break
            threading.Event().wait(0.01)
        for i in range(4, len(prompts)):
            submit(i)
        collected.wait(300)
    finally:
        engine.stop()
    for i, p in enumerate(prompts):
        ref = model.generate(torch.tensor([p]), max_new_tokens=max_tokens[i], do_sample=False,
                             eos_token_id=None)[0, len(p):].tolist()
        assert [e.token_id for e in events[i]] == ref, f"{kind}: prompt {i}"
    # the native step ran over batches of several rows at different lengths
    assert any(b >= 4 and distinct >= 4 for b, distinct in spy), f"{kind}: native row steps {spy[:8]}"


def test_rows_are_not_taken_where_the_mask_says_otherwise():
    cache = SlotCache(4, 32)
    cache.keys = [torch.zeros(4, 2, 32, 8)]
    cache.values = [torch.zeros(4, 2, 32, 8)]
    cache.bind([0, 2], [5, 3], 1)
    lengths = torch.tensor([5, 3])

    def additive(keep):
        return torch.zeros(keep.shape, dtype=torch.float32).masked_fill(~keep, torch.finfo(torch.float32).min)[:, None, None]

    own = torch.arange(6)[None] <= lengths[:, None]
    assert _rows_of(cache, [additive(own)], 1) is not None
    assert _rows_of(cache, [own[:, None, None]], 1) is not None  # a boolean mask reads the same
    window = own & (torch.arange(6)[None] > lengths[:, None] - 3)  # a sliding window: not each row's whole length
    assert _rows_of(cache, [additive(window)], 1) is None
    assert _rows_of(cache, [None], 1) is None  # no mask, rows of different lengths: attention over all of them
    assert _rows_of(cache, [additive(own)], 2) is None  # the cache holds another count of layers
    cache.bind([0, 2], [4, 4], 1)
    assert _rows_of(cache, [None], 1) is not None
    cache.bind([0, 2], [4, 4], 3)  # a prefill chunk: the module path
    assert _rows_of(cache, [None], 1) is None
