"""Tiny random reference models, built once per session with transformers and saved to disk."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from tests.models.parity import build_reference

LLAMA = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
GPT2 = dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0)
BERT = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64)

SPECS = {
    "llama_lm": ("LlamaForCausalLM", "LlamaConfig", LLAMA),
    "llama_cls": ("LlamaForSequenceClassification", "LlamaConfig", LLAMA),
    "gpt2_lm": ("GPT2LMHeadModel", "GPT2Config", GPT2),
    "gpt2_cls": ("GPT2ForSequenceClassification", "GPT2Config", GPT2),
    "bert_cls": ("BertForSequenceClassification", "BertConfig", BERT),
    "bert_tok": ("BertForTokenClassification", "BertConfig", BERT),
}


@pytest.fixture(scope="session")
def ref_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    warnings.filterwarnings("ignore")
    root = tmp_path_factory.mktemp("peft_refs")
    out = {}
    for name, (cls_name, cfg_name, kw) in SPECS.items():
        build_reference(cls_name, cfg_name, root / name, **kw)
        out[name] = root / name
    return out


_LOADED: dict[str, tuple] = {}


def load_pair(ref_dirs: dict[str, Path], name: str):
    """(transformers model, openformers model) with the same weights, both fp32 and in eval mode.

    Each library loads the saved reference once per session; callers get fresh deep copies."""
    import copy

    import transformers

    import openformers

    if name not in _LOADED:
        cls_name = SPECS[name][0]
        theirs = getattr(transformers, cls_name).from_pretrained(ref_dirs[name], dtype=torch.float32).eval()
        ours = getattr(openformers, cls_name).from_pretrained(ref_dirs[name], dtype=torch.float32).eval()
        _LOADED[name] = (theirs, ours)
    theirs, ours = _LOADED[name]
    return copy.deepcopy(theirs), copy.deepcopy(ours)


def batch(vocab: int = 96, b: int = 2, seq: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, seq), generator=g)
    mask = torch.ones(b, seq, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask}
