"""The LM head that scores in 4 bits and rescores its top candidates from the float weight."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from openformers.quantization.int4_head import CheckedInt4Head


def _head(vocab: int = 4096, hidden: int = 64) -> tuple[nn.Linear, CheckedInt4Head]:
    torch.manual_seed(0)
    linear = nn.Linear(hidden, vocab, bias=False)
    return linear, CheckedInt4Head.from_linear(linear)


@pytest.mark.parametrize("rows", [1, 3])
def test_top_logits_are_exact_and_the_rest_close(rows):
    linear, head = _head()
    x = torch.randn(rows, 1, 64)
    with torch.inference_mode():
        got, ref = head(x), linear(x)
    assert got.shape == ref.shape == (rows, 1, 4096)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    top = ref.topk(8, dim=-1).indices
    torch.testing.assert_close(got.gather(-1, top), ref.gather(-1, top), rtol=1e-5, atol=1e-5)
    err = (got - ref).abs()
    assert 0 < err.max() < 0.1 * ref.abs().max()  # the tail carries the 4-bit error, and only that


def test_shares_the_weight_and_state_dict_with_the_linear():
    linear, head = _head()
    assert head.weight is linear.weight and list(head.state_dict()) == ["weight"]
    assert head.step_bytes() < linear.weight.numel() * 4 / 5  # 4-bit copy + 64 rows vs float32


def test_training_and_long_inputs_use_the_float_weight():
    linear, head = _head()
    x = torch.randn(2, 5, 64, requires_grad=True)
    out = head(x)
    torch.testing.assert_close(out, linear(x))
    out.sum().backward()
    assert linear.weight.grad is not None and x.grad is not None
    with torch.inference_mode():
        torch.testing.assert_close(head(x.detach()), linear(x.detach()))  # 10 rows > max_rows


def test_weight_updated_in_place_rebuilds_the_copy():
    linear, head = _head()
    x = torch.randn(1, 64)
    with torch.no_grad():
        before = head(x)
        linear.weight.neg_()
        after = head(x)
    assert torch.equal(after.argmax(-1), linear(x).argmax(-1))
    assert not torch.equal(after.argmax(-1), before.argmax(-1))


def test_smollm2_fast_head_keeps_greedy_tokens():
    from openformers.models.auto import AutoModelForCausalLM
    from openformers.quantization import GGUFQuantizationConfig
    from openformers.quantization.gguf_linear import step_bytes

    plain = AutoModelForCausalLM.from_pretrained("smollm2", dtype=torch.bfloat16, quantization_config=GGUFQuantizationConfig())
    fast = AutoModelForCausalLM.from_pretrained(
        "smollm2", dtype=torch.bfloat16, quantization_config=GGUFQuantizationConfig(fast_lm_head=True))
    assert isinstance(fast.lm_head, CheckedInt4Head) and fast.lm_head.weight is fast.model.embed_tokens.weight
    assert step_bytes(fast) < step_bytes(plain) - 35e6  # 57 MB bfloat16 head -> 18 MB
    ids = torch.tensor([[1, 9690, 198, 504, 3458, 282, 4649, 314, 253, 1345, 30, 2, 198, 1, 4093, 198]])
    with torch.inference_mode():
        a = plain.generate(ids, max_new_tokens=12, do_sample=False)
        b = fast.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(a, b)
