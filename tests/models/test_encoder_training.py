"""Encoder training against transformers: with dropout on, on a padded batch, the loss and every gradient agree,
down to the dropout masks (both draw them from torch's generator in the same order)."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from tests.models.parity import assert_close, build_reference, random_batch

pytest.importorskip("transformers")

VOCAB = 99
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
DISTIL = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
REFERENCES = {
    "bert": ("Bert", dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2, **TINY), 0),
    "roberta": ("Roberta", dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2,
                                **{**TINY, "max_position_embeddings": 66}), 1),
    "distilbert": ("DistilBert", dict(dropout=0.2, attention_dropout=0.2, **DISTIL), 0),
}


def padded_batch(pad_id: int) -> dict[str, torch.Tensor]:
    """3 x 24 positions, rows of 10, 20 and 24 real tokens."""
    ids, mask = random_batch(VOCAB, batch=3, seq=24, pad_last=20)
    mask[0, 10:] = 0
    ids[mask == 0] = pad_id
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_training_loss_and_gradients_match_transformers(family: str, tmp_path: Path) -> None:
    prefix, config, pad_id = REFERENCES[family]
    ref = build_reference(f"{prefix}ForSequenceClassification", f"{prefix}Config", tmp_path, attn_implementation="sdpa",
                          num_labels=2, **config)
    module = importlib.import_module(f"openformers.models.{family}")
    ours = getattr(module, f"{prefix}ForSequenceClassification").from_pretrained(tmp_path, attn_implementation="sdpa")
    ref.train(), ours.train()
    inputs = padded_batch(pad_id)
    results = []
    for model in (ours, ref):
        torch.manual_seed(3)
        loss = model(**inputs).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}, torch.get_rng_state()))
    (loss, grads, rng), (ref_loss, ref_grads, ref_rng) = results
    assert torch.equal(rng, ref_rng)  # the same number of random draws
    assert_close(loss, ref_loss, atol=1e-6, what="loss")
    for name, grad in ref_grads.items():
        assert_close(grads[name], grad, atol=1e-5, what=name)
