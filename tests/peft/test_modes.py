"""Adapter modules start in the training mode of the module they wrap or are added to.

The peft package creates them in training mode whatever the model's mode (LoRA dropout then runs in an eval
model until ``.eval()`` is called again); openformers gives them the mode of the module they wrap (a LoRA
layer the mode of its base layer, its A/B/dropout modules the mode of the LoRA layer): an adapter added to a
model in eval mode gives deterministic outputs, those of peft's model after ``.eval()``, and decodes on the
runtime's plan; one added to a model in training mode trains."""
from __future__ import annotations

import pytest
import torch

from openformers.peft import LoraConfig, PromptTuningConfig, get_peft_model
from openformers.runtime import decode, decoder
from tests.peft.conftest import batch, load_pair

peft = pytest.importorskip("peft")

KW = dict(r=4, lora_alpha=8, lora_dropout=0.5, init_lora_weights=False, task_type="CAUSAL_LM")


def _logits(model, b):
    with torch.no_grad():
        return model(**b).logits


def _plans(model, b):
    """The plans the decode steps of a short greedy ``generate`` got (None: the module path ran)."""
    got = []
    real = decoder.plan_for

    def spy(m):
        got.append(decode.plan_for(m))
        return got[-1]
    decoder.plan_for = spy
    try:
        with torch.no_grad():
            model.generate(**b, max_new_tokens=4, do_sample=False)
    finally:
        decoder.plan_for = real
    return got


def _copy_adapter(theirs, ours, name="default"):
    state = {k: v for k, v in theirs.state_dict().items() if f".{name}." in k and ".lora_" in k}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert state and not unexpected and not [k for k in missing if ".lora_" in k and f".{name}." in k]


def test_lora_on_an_eval_model_starts_in_eval_mode_like_peft_after_eval(ref_dirs):
    theirs, ours = load_pair(ref_dirs, "llama_lm")  # both in eval mode
    pt = peft.get_peft_model(theirs, peft.LoraConfig(**KW, target_modules=["q_proj", "v_proj", "down_proj"]))
    po = get_peft_model(ours, LoraConfig(**KW, target_modules=["q_proj", "v_proj", "down_proj"]))
    assert any(m.training for m in pt.modules())  # the oracle leaves new modules training (dropout active)
    assert not any(m.training for m in po.modules())
    _copy_adapter(pt, po)
    b = batch()
    first = _logits(po, b)
    assert torch.equal(first, _logits(po, b))  # no dropout
    torch.testing.assert_close(first, _logits(pt.eval(), b), atol=1e-5, rtol=1e-5)
    plans = _plans(po, b)
    assert plans and all(p is not None for p in plans)

    # a second adapter added later starts in eval mode too, on layers it already wraps and on new ones
    pt.add_adapter("two", peft.LoraConfig(**KW, target_modules=["q_proj", "k_proj"]))
    po.add_adapter("two", LoraConfig(**KW, target_modules=["q_proj", "k_proj"]))
    assert not any(m.training for m in po.modules())
    _copy_adapter(pt, po, "two")
    pt.set_adapter("two")
    po.set_adapter("two")
    second = _logits(po, b)
    assert torch.equal(second, _logits(po, b)) and not torch.allclose(second, first)
    torch.testing.assert_close(second, _logits(pt.eval(), b), atol=1e-5, rtol=1e-5)
    plans = _plans(po, b)
    assert plans and all(p is not None for p in plans)


@pytest.fixture()
def llama(ref_dirs):
    return load_pair(ref_dirs, "llama_lm")[1]


def test_lora_on_a_model_in_training_mode_starts_training(llama):
    po = get_peft_model(llama.train(), LoraConfig(**KW, target_modules=["q_proj", "gate_proj"]))
    names = [n for n, _ in po.named_modules() if ".lora_" in n]
    assert names and all(m.training for m in po.modules())
    b = batch()
    assert not torch.equal(_logits(po, b), _logits(po, b))  # dropout on the adapter input
    po.add_adapter("two", LoraConfig(**KW, target_modules=["k_proj"]))
    assert all(m.training for m in po.modules())


def test_mixed_modes_follow_the_wrapped_module(llama):
    llama.eval()
    llama.model.layers[1].train()  # one layer training, the rest in eval mode
    po = get_peft_model(llama, LoraConfig(**KW, target_modules=["q_proj"]))
    layers = po.base_model.model.model.layers
    for i, training in ((0, False), (1, True)):
        q = layers[i].self_attn.q_proj
        assert {m.training for m in q.modules()} == {training}, i
    assert not po.training and not po.base_model.training  # the wrappers follow the model


def test_prompt_tuning_on_an_eval_model_starts_in_eval_mode(llama):
    po = get_peft_model(llama.eval(), PromptTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"))
    assert not any(m.training for m in po.modules())
