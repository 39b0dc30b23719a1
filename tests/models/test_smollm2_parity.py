"""The embedded SmolLM2-135M: the same greedy tokens as transformers in float32 (64 new tokens
of several prompts) and the same logits and tokens in bfloat16.

bf16 rounds after every op, so only the same operations in the same order give the same
numbers; this guards the casting order of the norms, rotary tables, attention, residual adds and
head, and that the inference-time fused projections round as the separate ones do.

The reference is transformers' LlamaForCausalLM with transformers' own GGUF config and the
weights our GGUF reader dequantized (test_gguf.py checks those against transformers' reader);
building it this way skips transformers' slow GGUF conversion and keeps the test fast.
"""
from __future__ import annotations

import pytest
import torch

from openformers.core.hub import embedded_model_path

def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


# CPUs with bf16 dot products (AVX-512 BF16 or AMX) run both sides' bf16 products on kernels that sum alike
_NATIVE_BF16 = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
]


def _pair(dtype: torch.dtype):
    transformers = pytest.importorskip("transformers")
    from openformers.models.auto import AutoModelForCausalLM

    try:
        path = embedded_model_path("smollm2")
    except OSError as exc:
        pytest.skip(str(exc))
    ours = AutoModelForCausalLM.from_pretrained("smollm2", dtype=dtype).eval()
    config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    config.quantization_config = None
    config._attn_implementation = "sdpa"  # what from_pretrained picks
    with torch.device("meta"):
        ref = transformers.LlamaForCausalLM(config)
    ref.load_state_dict(ours.state_dict(), strict=False, assign=True)
    ref.tie_weights()
    ref = ref.to(dtype).eval()
    # its float32 frequencies, computed on the CPU (from_pretrained keeps them float32 as well)
    ref.model.rotary_emb = type(ref.model.rotary_emb)(config)
    assert not [n for n, t in [*ref.named_parameters(), *ref.named_buffers()] if t.is_meta]
    return ours, ref


@pytest.fixture(scope="module")
def models():
    return _pair(torch.bfloat16)


@pytest.fixture(scope="module")
def models_fp32():
    return _pair(torch.float32)


@pytest.fixture(scope="module")
def tokenizer():
    from openformers import AutoTokenizer

    return AutoTokenizer.from_pretrained("smollm2")


def test_prefill_logits_are_identical(models):
    ours, ref = models
    # 256 positions: long enough for the q/k/v and gate/up GEMMs to round differently when fused
    ids = torch.randint(3, 49152, (1, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mine, theirs = ours(ids).logits, ref(ids).logits
    assert mine.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def _left_padded(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    width, pad = max(map(len, rows)), 2  # SmolLM2's pad token
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_greedy_64_tokens_are_identical(models_fp32, tokenizer, threads):
    # one and two threads: decode steps of a few rows take a different matmul path with several threads
    ours, ref = models_fp32
    ids, mask = _left_padded(tokenizer)
    kw = {"max_new_tokens": 64, "min_new_tokens": 64, "do_sample": False, "pad_token_id": 2}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            mine = ours.generate(ids, attention_mask=mask, **kw)
            theirs = ref.generate(ids, attention_mask=mask, **kw)
            alone = ours.generate(ids[2:, int((mask[2] == 0).sum()):], **kw)  # a prompt without padding
            alone_ref = ref.generate(ids[2:, int((mask[2] == 0).sum()):], **kw)
    finally:
        torch.set_num_threads(before)
    assert mine.shape == (3, ids.shape[1] + 64)
    assert torch.equal(mine, theirs)
    assert torch.equal(alone, alone_ref)


def test_greedy_tokens_and_scores_are_identical(models, tokenizer):
    # a left-padded batch: masked decode steps of grouped-query attention, several rows per matmul
    ours, ref = models
    ids, mask = _left_padded(tokenizer)
    width, pad = ids.shape[1], 2
    kw = {"attention_mask": mask, "max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "pad_token_id": pad,
          "return_dict_in_generate": True, "output_scores": True}
    with torch.no_grad():
        mine, theirs = ours.generate(ids, **kw), ref.generate(ids, **kw)
    assert mine.sequences.shape == (3, width + 8)
    assert torch.equal(mine.sequences, theirs.sequences)
    for step, (a, b) in enumerate(zip(mine.scores, theirs.scores)):
        if _NATIVE_BF16:
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m, s=step: f"step {s}: {m}")
        else:
            # without bf16 dot-product instructions oneDNN emulates bf16, and the packed products of a decode
            # step round apart from transformers' plain ones; both stay as far from float32's logits (mean
            # error ~0.1 at logits ~30, measured on an Intel Xeon without AVX-512 BF16), so the tokens must be
            # equal (above) and the scores within bf16 noise, with -inf at the same places
            assert torch.equal(torch.isfinite(a), torch.isfinite(b)), f"step {step}: masked scores differ"
            torch.testing.assert_close(a.float().nan_to_num(neginf=0), b.float().nan_to_num(neginf=0), rtol=0.05,
                                       atol=1.0, msg=lambda m, s=step: f"step {s}: {m}")
