"""Causal-LM training on a right-padded batch whose labels are -100 at padding (Llama, GPT-2): loss, logits
at real tokens and gradients as transformers computes them. (Several documents in one row without padding go
through ``DataCollatorWithFlattening``: tests/data/test_flattening.py.)"""
from __future__ import annotations

from pathlib import Path

import torch

import openformers
from tests.models.llama_family import tiny_config
from tests.models.parity import assert_close, build_reference


def padded_batch(pad_id: int = 0) -> dict[str, torch.Tensor]:
    """3 right-padded rows of 24 positions, 34 real tokens; labels -100 at padding."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (3, 24), generator=g)
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[0, 10:], mask[2, 4:] = 0, 0
    ids[mask == 0] = pad_id
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_gpt2_training_matches_transformers(tmp_path: Path) -> None:
    cfg = dict(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.2, embd_pdrop=0.2,
               attn_pdrop=0.0, pad_token_id=0)
    ref = build_reference("GPT2LMHeadModel", "GPT2Config", tmp_path, attn_implementation="sdpa", **cfg)
    ours = openformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="sdpa")
    ref.train(), ours.train()
    inputs = padded_batch()
    results = []
    for model in (ours, ref):
        torch.manual_seed(3)
        out = model(**inputs)
        out.loss.backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (out, grads), (ref_out, ref_grads) = results
    assert_close(out.loss, ref_out.loss, atol=1e-6, what="loss")
    for name, grad in ref_grads.items():
        assert_close(grads[name], grad, atol=1e-5, what=name)


def test_training_loss_and_gradients_match_transformers(tmp_path: Path) -> None:
    ref = build_reference("LlamaForCausalLM", "LlamaConfig", tmp_path, attn_implementation="sdpa", **tiny_config())
    ours = openformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa")
    ref.train(), ours.train()
    inputs = padded_batch()
    results = []
    for model in (ours, ref):
        out = model(**inputs)
        out.loss.backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (out, grads), (ref_out, ref_grads) = results
    assert_close(out.loss, ref_out.loss, atol=1e-6, what="loss")
    assert_close(out.logits, ref_out.logits, atol=1e-5, mask=inputs["attention_mask"], what="logits")
    for name, grad in ref_grads.items():
        assert_close(grads[name], grad, atol=1e-5, what=name)
