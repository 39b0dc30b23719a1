"""LoHa and LoKr against the peft package on tiny random Llama and BERT models."""
from __future__ import annotations

import json

import pytest
import torch

import openformers.peft as ofp
from openformers.peft import LoHaConfig, LoKrConfig, get_peft_config, get_peft_model
from openformers.peft.lycoris import LoHaLinear, LoKrLinear, factorization
from tests.models.parity import assert_close
from tests.peft.conftest import batch, load_pair
from tests.peft.test_lora import logits
from tests.peft.test_other_methods import _round_trip

peft = pytest.importorskip("peft")

CASES = [
    ("llama_lm", "LoHaConfig", dict(r=4, alpha=8)),
    ("bert_cls", "LoHaConfig", dict(r=2, alpha=4, rank_pattern={"value": 3}, alpha_pattern={"query": 2})),
    ("llama_lm", "LoHaConfig", dict(r=3, alpha=5, target_modules=["k_proj", "o_proj"], layers_to_transform=[1])),
    ("llama_lm", "LoKrConfig", dict(r=8, alpha=8)),  # full w1 and w2
    ("llama_lm", "LoKrConfig", dict(r=1, alpha=2, decompose_both=True, target_modules=["q_proj", "v_proj", "down_proj"])),
    ("bert_cls", "LoKrConfig", dict(r=2, alpha=3, decompose_factor=4, init_weights="lycoris")),
]


def _task(name: str) -> str:
    return "SEQ_CLS" if name.endswith("cls") else "CAUSAL_LM"


@pytest.mark.parametrize("name,cls,kw", CASES)
def test_parity_both_ways(ref_dirs, tmp_path, name, cls, kw):
    """Same trainable parameters as peft; peft's saved adapter gives peft's logits here, ours gives them in peft."""
    make = lambda m: getattr(m, cls)(task_type=_task(name), **kw)  # noqa: E731
    theirs, ours = load_pair(ref_dirs, name)
    pt, po = peft.get_peft_model(theirs, make(peft)), get_peft_model(ours, make(ofp))
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert shapes(po) == shapes(pt)
    b = batch()
    # a fresh adapter is a no-op (init_weights zeroes one factor)
    assert_close(logits(po, b), logits(load_pair(ref_dirs, name)[1], b), atol=1e-6, what="fresh adapter")
    loaded, pt = _round_trip(ref_dirs, tmp_path, name, make, b, check_merge=True)
    saved = json.loads((tmp_path / "ours/adapter_config.json").read_text())
    assert saved["peft_type"] == cls.removesuffix("Config").upper()
    assert type(get_peft_config(saved)) is getattr(ofp, cls)


@pytest.mark.parametrize("cls", ["LoHaConfig", "LoKrConfig"])
def test_merge_disable_and_training(ref_dirs, cls):
    _, ours = load_pair(ref_dirs, "llama_lm")
    base = logits(ours, batch())
    kw = dict(r=2, alpha=4, init_weights=False, target_modules=["q_proj", "v_proj", "up_proj"])
    torch.manual_seed(0)
    po = get_peft_model(ours, getattr(ofp, cls)(task_type="CAUSAL_LM", **kw))
    layer_cls = LoHaLinear if cls == "LoHaConfig" else LoKrLinear
    assert sum(isinstance(m, layer_cls) for m in po.modules()) == 6
    b = batch()
    unmerged = logits(po, b)
    assert (unmerged - base).abs().max() > 1e-3  # random factors change the output
    with po.disable_adapter():
        assert_close(logits(po, b), base, atol=1e-6, what="disabled")
    po.merge_adapter()
    assert_close(logits(po, b), unmerged, atol=1e-5, what="merged")
    po.unmerge_adapter()
    assert_close(logits(po, b), unmerged, atol=1e-6, what="unmerged")
    # training changes only the adapter factors
    before = {n: p.detach().clone() for n, p in po.named_parameters()}
    trainable = {n for n, p in po.named_parameters() if p.requires_grad}
    prefix = "hada_" if cls == "LoHaConfig" else "lokr_"
    assert trainable and all(f".{prefix}" in n for n in trainable)
    opt = torch.optim.AdamW([p for p in po.parameters() if p.requires_grad], lr=1e-2)
    po.train()
    losses = []
    for _ in range(3):
        loss = po(**b, labels=b["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in po.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == (n in trainable), n


def test_dropouts_and_errors(ref_dirs):
    _, ours = load_pair(ref_dirs, "llama_lm")
    b = batch()
    po = get_peft_model(ours, LoKrConfig(task_type="CAUSAL_LM", r=2, init_weights=False, rank_dropout=0.5,
                                         module_dropout=0.5, rank_dropout_scale=True))
    po.train()
    torch.manual_seed(0)
    out = po(**b, labels=b["input_ids"])
    out.loss.backward()  # gradients flow through the dropped update
    po.eval()
    assert torch.equal(logits(po, b), logits(po, b))  # no dropout at eval
    assert factorization(32) == (4, 8) and factorization(127) == (1, 127) and factorization(128, 4) == (4, 32)
    with pytest.raises(ValueError, match="init_weights"):
        LoHaConfig(init_weights="lycoris")
    with pytest.raises(ValueError, match="decompose_factor"):
        LoKrConfig(decompose_factor=0)
    with pytest.raises(ValueError, match="layers_to_transform"):
        LoHaConfig(layers_pattern="layers")
    _, gpt2 = load_pair(ref_dirs, "gpt2_lm")
    with pytest.raises(ValueError, match="nn.Linear"):
        get_peft_model(gpt2, LoHaConfig(task_type="CAUSAL_LM"))


def test_several_adapters(ref_dirs, tmp_path):
    _, ours = load_pair(ref_dirs, "llama_lm")
    b = batch()
    base = logits(ours, b)
    po = get_peft_model(ours, LoHaConfig(task_type="CAUSAL_LM", r=2, init_weights=False))
    first = logits(po, b)
    po.add_adapter("second", LoHaConfig(task_type="CAUSAL_LM", r=3, init_weights=False))
    assert_close(logits(po, b), first, atol=1e-6, what="the active adapter is still the first")
    po.set_adapter("second")
    second = logits(po, b)
    assert (second - first).abs().max() > 1e-3 and (second - base).abs().max() > 1e-3
    assert all(".second" in n for n, p in po.named_parameters() if p.requires_grad)
    po.save_pretrained(tmp_path)
    assert (tmp_path / "second/adapter_model.safetensors").is_file()
    with pytest.raises(ValueError, match="LOKR"):
        po.add_adapter("other", LoKrConfig(task_type="CAUSAL_LM"))
    po.delete_adapter("second")
    assert_close(logits(po, b), first, atol=1e-6, what="after deleting the second adapter")
    again = ofp.PeftModel.from_pretrained(load_pair(ref_dirs, "llama_lm")[1], tmp_path / "second")
    assert_close(logits(again, b), second, atol=1e-6, what="second adapter reloaded")


def test_adalora_training_allocation_and_files(ref_dirs, tmp_path):
    """AdaLoRA against peft: same loss (with the orthogonality penalty) and gradients, the same ranks pruned
    at every step of the budget schedule, and the pruned adapter files load both ways."""
    kw = dict(task_type="CAUSAL_LM", init_r=4, target_r=2, total_step=8, tinit=1, tfinal=2, deltaT=1, lora_alpha=16,
              target_modules=["q_proj", "v_proj", "up_proj"], orth_reg_weight=0.3)
    theirs, ours = load_pair(ref_dirs, "llama_lm")
    pt = peft.get_peft_model(theirs, peft.AdaLoraConfig(**kw))
    po = get_peft_model(ours, ofp.AdaLoraConfig(**kw))
    own = dict(po.named_parameters())
    assert {n for n, p in own.items() if p.requires_grad} == {n for n, p in pt.named_parameters() if p.requires_grad}
    torch.manual_seed(5)
    with torch.no_grad():
        for n, p in pt.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # non-zero singular values
                own[n].copy_(p)
    b = batch()
    opt_t = torch.optim.SGD([p for p in pt.parameters() if p.requires_grad], lr=0.05)
    opt_o = torch.optim.SGD([p for p in po.parameters() if p.requires_grad], lr=0.05)
    pt.train()
    po.train()
    pruned = []
    frozen = {n: p.detach().clone() for n, p in po.named_parameters() if not p.requires_grad}
    for step in range(10):
        lt, lo = pt(**b, labels=b["input_ids"]).loss, po(**b, labels=b["input_ids"]).loss
        assert_close(lo, lt, atol=1e-5, what=f"loss at step {step}")
        lt.backward()
        lo.backward()
        for n, p in pt.named_parameters():
            if p.requires_grad:
                assert_close(own[n].grad, p.grad, atol=1e-5, what=f"grad of {n} at step {step}")
        opt_t.step()
        opt_o.step()
        pt.base_model.update_and_allocate(step)
        po.base_model.update_and_allocate(step)
        opt_t.zero_grad()
        opt_o.zero_grad()
        assert po.peft_config["default"].rank_pattern == pt.peft_config["default"].rank_pattern, step
        for n, p in pt.named_parameters():
            if "lora_E" in n:
                assert_close(own[n], p, atol=1e-5, what=f"{n} at step {step}")
        pruned.append(sum(int((p == 0).sum()) for n, p in po.named_parameters() if "lora_E" in n))
    assert pruned[0] == 0 and pruned[-1] == 6 * (4 - 2)  # budget reaches target_r per layer
    assert all(torch.equal(p, frozen[n]) for n, p in po.named_parameters() if n in frozen)  # only the adapter trained
    pt.eval()
    po.eval()
    ref = logits(pt, b)
    assert_close(logits(po, b), ref, atol=1e-5, what="after allocation")
    pt.save_pretrained(tmp_path / "theirs")
    po.save_pretrained(tmp_path / "ours")
    from safetensors.torch import load_file

    a, o = load_file(str(tmp_path / "theirs/adapter_model.safetensors")), load_file(str(tmp_path / "ours/adapter_model.safetensors"))
    assert sorted(a) == sorted(o)
    for k in a:
        assert_close(o[k], a[k], atol=1e-5, what=k)
    # pruned ranks are not saved: the file holds the budget, target_r ranks per layer on average
    assert sum(v.shape[0] for k, v in o.items() if k.endswith("lora_E")) == 6 * 2
    assert json.loads((tmp_path / "ours/adapter_config.json").read_text())["rank_pattern"] == \
        json.loads((tmp_path / "theirs/adapter_config.json").read_text())["rank_pattern"]
    loaded = ofp.PeftModel.from_pretrained(load_pair(ref_dirs, "llama_lm")[1], tmp_path / "theirs")
    back = peft.PeftModel.from_pretrained(load_pair(ref_dirs, "llama_lm")[0], tmp_path / "ours").eval()
    assert_close(logits(loaded, b), logits(back, b), atol=1e-5, what="reloaded AdaLoRA adapters")
    with torch.no_grad():
        unmerged = logits(loaded, b)
        loaded.merge_adapter()
        assert_close(logits(loaded, b), unmerged, atol=1e-5, what="merged AdaLoRA")
    with pytest.raises(ValueError, match="total_step"):
        ofp.AdaLoraConfig()
