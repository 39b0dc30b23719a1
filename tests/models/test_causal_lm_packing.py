"""Causal-LM training on packed tokens (Llama, Mistral, Qwen2, GPT-2): a padded batch whose labels score no
padding position runs the decoder and the head on the real tokens only, with the padded run's loss,
gradients and random stream."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import openformers
from openformers.modules.packing import TokenPacking
from tests.models.llama_family import tiny_config
from tests.models.packing_checks import Counter, assert_same_training, packed_and_padded
from tests.models.parity import assert_close, build_reference

FAMILIES = ("Llama", "Mistral", "Qwen2")


def padded_batch(pad_id: int = 0) -> dict[str, torch.Tensor]:
    """3 right-padded rows of 24 positions, 34 real tokens (48 packed rows); labels -100 at padding."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (3, 24), generator=g)
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[0, 10:], mask[2, 4:] = 0, 0
    ids[mask == 0] = pad_id
    labels = ids.masked_fill(mask == 0, -100)
    assert TokenPacking.worth_it(mask).n_rows == 48
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_causal_lm_training_equals_padded(family: str, checkpointing: bool, monkeypatch) -> None:
    torch.manual_seed(0)
    config = getattr(openformers, f"{family}Config")(**tiny_config(attention_dropout=0.2))
    model = getattr(openformers, f"{family}ForCausalLM")(config).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    inputs = padded_batch()
    results = packed_and_padded(model, inputs, monkeypatch)
    assert_same_training(results, inputs["attention_mask"])
    left_out = results[0][0].logits.abs().sum(-1) == 0
    assert int(left_out.sum()) == 72 - 48 and not (left_out & inputs["attention_mask"].bool()).any()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gpt2_packs_with_its_dropouts(checkpointing: bool, monkeypatch) -> None:
    """GPT-2's residual and MLP dropouts on packed rows draw the padded tensor's masks."""
    torch.manual_seed(0)
    config = openformers.GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.2,
                                    embd_pdrop=0.2, attn_pdrop=0.2, pad_token_id=0)
    model = openformers.GPT2LMHeadModel(config).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    inputs = padded_batch()
    results = packed_and_padded(model, inputs, monkeypatch)
    assert_same_training(results, inputs["attention_mask"])


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


def test_lora_with_dropout_packs_like_the_padded_run(monkeypatch) -> None:
    from openformers.peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = openformers.LlamaForCausalLM(openformers.LlamaConfig(**tiny_config()))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "v_proj", "down_proj"])).train()
    inputs = padded_batch()
    assert_same_training(packed_and_padded(model, inputs, monkeypatch), inputs["attention_mask"])


def test_runs_padded_when_padding_would_be_read(monkeypatch) -> None:
    """Labels that score a padding position (labels = input_ids, padding not masked), no labels,
    evaluation, hidden states asked for, left padding: the padded computation."""
    torch.manual_seed(0)
    model = openformers.LlamaForCausalLM(openformers.LlamaConfig(**tiny_config())).train()
    inputs = padded_batch()
    counter = Counter(monkeypatch)
    model(**{**inputs, "labels": inputs["input_ids"]})
    model(**inputs, output_hidden_states=True)
    model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])  # no labels: logits everywhere
    model.eval()(**inputs)
    model.train()
    left = {k: v.flip(1) for k, v in inputs.items()}
    model(**left)
    assert counter.packed == 0
    model(**inputs)
    assert counter.packed == 1


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
