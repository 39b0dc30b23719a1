from __future__ import annotations

import pytest
import torch

TINY_GPT2 = dict(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=2, pad_token_id=0)


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """A tiny GPT-2 saved with save_pretrained (safetensors, config.json)."""
    from openformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    GPT2LMHeadModel(GPT2Config(**TINY_GPT2)).eval().save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _own_caches(tmp_path, monkeypatch):
    """Every test writes its dataset caches under its own temporary folder."""
    monkeypatch.setenv("OPENFORMERS_DATA_CACHE", str(tmp_path / "of_cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
