"""weight_bytes / step_bytes: the bytes a model holds and the bytes one decoding step reads."""
from __future__ import annotations

import pytest
import torch

from openformers import LlamaConfig, LlamaForCausalLM
from openformers.quantization.gguf_linear import step_bytes, weight_bytes


@pytest.mark.parametrize("tied", [True, False])
def test_bytes_held_and_read_per_step(tied: bool) -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied))
    storages = {t.data_ptr(): t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())}
    assert weight_bytes(model) == sum(storages.values())  # a tied matrix once
    embedding = 128 * 64 * 4
    # a step reads one embedding row, not the matrix; the head whole, tied or not
    assert step_bytes(model) == weight_bytes(model) - (0 if tied else embedding)
