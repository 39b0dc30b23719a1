"""A tiny random Llama with the SmolLM2 tokenizer (real vocabulary and chat template), saved once per session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


def build_tiny_llama(path: Path) -> Path:
    import openformers
    from openformers import AutoTokenizer
    from openformers.models.llama import LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(openformers.embedded_model_path("smollm2"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
