"""LoRA's dropout masks (modules/dropout.py): the asked keep probability at every position,
exact scaling, a gradient through the mask, reproducible under the seed, and what LoRA draws."""
from __future__ import annotations

import pytest
import torch

from openformers.modules.dropout import dropout, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_every_piece_of_a_draw_keeps_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    mask = keep_mask((4000, 1000), p, torch.device("cpu"))
    assert mask.dtype == torch.bool and mask.shape == (4000, 1000)
    # each 64-bit draw feeds four neighbours: a biased piece (a draw whose top bits are never set)
    # shows up as one position in four kept at another rate
    per_piece = mask.reshape(-1, 4).float().mean(0)
    sigma = (p * (1 - p) / 1e6) ** 0.5
    assert (per_piece - (1 - p)).abs().max() < 6 * sigma, per_piece
    # neighbours are independent: both kept as often as the product of their rates
    pairs = mask.reshape(-1, 2).float()
    assert abs((pairs[:, 0] * pairs[:, 1]).mean() - (1 - p) ** 2) < 6 * sigma


def test_scaling_gradient_and_edge_cases() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 7, 11, requires_grad=True)  # 385 elements: not a whole number of draws
    y = dropout(x, 0.3, training=True)
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * (1 / 0.7))  # as F.dropout scales
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, kept.float() * (1 / 0.7))
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    assert torch.count_nonzero(dropout(x, 1.0, training=True)) == 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(x, 1.5, training=True)


def test_reproducible_under_the_seed() -> None:
    torch.manual_seed(7)
    first = keep_mask((33, 17), 0.1, torch.device("cpu"))
    torch.manual_seed(7)
    assert torch.equal(keep_mask((33, 17), 0.1, torch.device("cpu")), first)
    assert not torch.equal(keep_mask((33, 17), 0.1, torch.device("cpu")), first)


def test_lora_dropout_draws_these_masks() -> None:
    from openformers.models.llama import LlamaConfig, LlamaForCausalLM
    from openformers.peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.25, target_modules=["q_proj"],
                                                             task_type="CAUSAL_LM", init_lora_weights=False)).train()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 9, 64)
    torch.manual_seed(3)
    out = layer(x)
    torch.manual_seed(3)
    mask = keep_mask(x.shape, 0.25, x.device)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = layer.base_layer(x) + (x * mask / 0.75) @ a.t() @ b.t() * layer.scaling["default"]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
