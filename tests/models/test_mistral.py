"""Mistral: the Llama checks plus sliding-window attention against transformers."""
from __future__ import annotations

import pytest
import torch

import openformers
from tests.models import llama_family as fam
from tests.models.parity import assert_close, build_reference

pytest.importorskip("transformers")

WINDOW = {"sliding_window": 4}  # smaller than the test sequences


@pytest.mark.parametrize("head", fam.HEADS)
def test_head_parity(head, tmp_path):
    fam.check_head_parity("Mistral", head, tmp_path, **WINDOW)


def test_sliding_window_sdpa_parity(tmp_path):
    fam.check_unpadded_sdpa_parity("Mistral", tmp_path, seq=11, **WINDOW)


def test_sliding_window_left_padded_parity(tmp_path):
    ref = build_reference("MistralForCausalLM", "MistralConfig", tmp_path, **fam.tiny_config(**WINDOW))
    ours = openformers.MistralForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(3, fam.VOCAB, (2, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = ref(ids, attention_mask=mask, position_ids=pos).logits
        assert_close(ours(ids, attention_mask=mask, position_ids=pos).logits, theirs, mask=mask, what="windowed, padded")


def test_window_changes_the_output():
    torch.manual_seed(0)
    model = openformers.MistralForCausalLM(openformers.MistralConfig(**fam.tiny_config(sliding_window=None))).eval()
    ids = torch.randint(3, fam.VOCAB, (1, 10))
    with torch.no_grad():
        full = model(ids).logits
        model.config.sliding_window = 4
        windowed = model(ids).logits
    assert_close(windowed[:, :4], full[:, :4], what="inside the window")
    assert (windowed[:, 4:] - full[:, 4:]).abs().max() > 1e-4


def test_padding():
    fam.check_padding("Mistral", **WINDOW)


def test_cached_decoding():
    fam.check_cached_decoding("Mistral", **WINDOW)


def test_eager_vs_sdpa():
    fam.check_eager_vs_sdpa("Mistral", **WINDOW)


def test_save_here_load_in_transformers(tmp_path):
    fam.check_save_here_load_there("Mistral", tmp_path, **WINDOW)


def test_gradient_checkpointing():
    fam.check_gradient_checkpointing("Mistral", **WINDOW)


def test_tied_embeddings(tmp_path):
    fam.check_tied_embeddings("Mistral", tmp_path)


def test_config_defaults():
    import transformers

    ours, theirs = openformers.MistralConfig(), transformers.MistralConfig()
    for key in ("vocab_size", "intermediate_size", "num_key_value_heads", "max_position_embeddings", "sliding_window",
                "head_dim", "rope_parameters", "bos_token_id", "eos_token_id", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert "attention_bias" not in ours.to_dict()
    assert openformers.AutoConfig.for_model("mistral").model_type == "mistral"
