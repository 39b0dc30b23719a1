"""IA3, prompt tuning and prefix tuning against the peft package."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from openformers.peft import IA3Config, PeftModel, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from tests.models.parity import assert_close
from tests.peft.conftest import batch, load_pair
from tests.peft.test_lora import logits, printed

peft = pytest.importorskip("peft")


def _perturb(model) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)


def _round_trip(ref_dirs, tmp_path, name, make_config, b, atol=1e-5, check_merge=False):
    theirs, ours = load_pair(ref_dirs, name)
    pt = peft.get_peft_model(theirs, make_config(peft))
    import openformers.peft as ofp

    po = get_peft_model(ours, make_config(ofp))
    assert printed(po) == printed(pt)
    _perturb(pt)
    pt.save_pretrained(tmp_path / "theirs")
    pt.eval()
    ref = logits(pt, b)
    loaded = PeftModel.from_pretrained(load_pair(ref_dirs, name)[1], tmp_path / "theirs")
    assert_close(logits(loaded, b), ref, atol=atol, what=f"{name}: peft adapter here")
    loaded.save_pretrained(tmp_path / "ours")
    a, o = load_file(str(tmp_path / "theirs/adapter_model.safetensors")), load_file(str(tmp_path / "ours/adapter_model.safetensors"))
    assert sorted(a) == sorted(o) and all(torch.equal(a[k], o[k]) for k in a)
    back = peft.PeftModel.from_pretrained(load_pair(ref_dirs, name)[0], tmp_path / "ours").eval()
    assert_close(logits(back, b), ref, atol=atol, what=f"{name}: our adapter in peft")
    if check_merge:
        merged = loaded.merge_and_unload()
        assert_close(logits(merged, b), ref, atol=1e-4, what=f"{name}: merged")
    return loaded, pt


@pytest.mark.parametrize("name", ["llama_lm", "gpt2_lm", "bert_cls"])
def test_ia3(ref_dirs, tmp_path, name):
    task = "SEQ_CLS" if name.endswith("cls") else "CAUSAL_LM"
    _round_trip(ref_dirs, tmp_path, name, lambda m: m.IA3Config(task_type=task), batch(), check_merge=True)


@pytest.mark.parametrize("name", ["llama_lm", "bert_cls", "llama_cls"])
def test_prompt_tuning(ref_dirs, tmp_path, name):
    task = "SEQ_CLS" if name.endswith("cls") else "CAUSAL_LM"
    b = batch()
    b["attention_mask"][1, -2:] = 0  # right padding on one row
    make = lambda m: m.PromptTuningConfig(task_type=task, num_virtual_tokens=4)  # noqa: E731
    _round_trip(ref_dirs, tmp_path, name, make, b)


@pytest.mark.parametrize("name", ["llama_lm", "gpt2_lm", "llama_cls"])
def test_prefix_tuning(ref_dirs, tmp_path, name):
    task = "SEQ_CLS" if name.endswith("cls") else "CAUSAL_LM"
    b = batch()
    make = lambda m: m.PrefixTuningConfig(task_type=task, num_virtual_tokens=3)  # noqa: E731
    loaded, pt = _round_trip(ref_dirs, tmp_path, name, make, b)
    if task == "CAUSAL_LM":
        # loss with labels, and greedy generation through the prefix cache
        out_o = loaded(**b, labels=b["input_ids"])
        out_t = pt(**b, labels=b["input_ids"])
        assert_close(out_o.loss, out_t.loss, atol=1e-5, what="prefix loss")
        gen_o = loaded.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], max_new_tokens=4, do_sample=False)
        gen_t = pt.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], max_new_tokens=4, do_sample=False)
        assert torch.equal(gen_o, gen_t)


def test_prompt_tuning_text_init_and_training(ref_dirs):
    _, ours = load_pair(ref_dirs, "llama_lm")
    b = batch()
    po = get_peft_model(ours, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    out = po(**b, labels=b["input_ids"])
    out.loss.backward()
    grads = [p.grad for p in po.parameters() if p.requires_grad]
    assert len(grads) == 1 and grads[0] is not None and grads[0].abs().sum() > 0
    assert all(p.grad is None for p in po.get_base_model().parameters())
    assert out.logits.shape[1] == b["input_ids"].shape[1] + 3
    with po.disable_adapter():
        assert_close(logits(po, b), logits(ours, b), what="disabled prompt")
    with pytest.raises(ValueError, match="prompt_tuning_init_text"):
        PromptTuningConfig(num_virtual_tokens=3, prompt_tuning_init="TEXT")


def test_prefix_tuning_needs_cache_support(ref_dirs):
    _, ours = load_pair(ref_dirs, "bert_cls")
    with pytest.raises(ValueError, match="past_key_values"):
        get_peft_model(ours, PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2))
    _, ours = load_pair(ref_dirs, "llama_lm")
    po = get_peft_model(ours, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    from openformers.peft import LoraConfig

    with pytest.raises(ValueError, match="one PEFT method per model"):
        po.add_adapter("other", LoraConfig())
    _ = IA3Config  # exported


@pytest.mark.parametrize("name", ["llama_lm", "gpt2_lm"])
def test_prefix_projection(ref_dirs, tmp_path, name):
    import openformers.peft as ofp

    b = batch()
    make = lambda m: m.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=True,  # noqa: E731
                                          encoder_hidden_size=24)
    theirs, ours = load_pair(ref_dirs, name)
    pt = peft.get_peft_model(theirs, make(peft))
    po = get_peft_model(ours, make(ofp))
    # the same trainable parameters under the same names: table, then the two-layer MLP
    names = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert names(po) == names(pt)
    assert "prompt_encoder.default.transform.2.weight" in names(po)
    _perturb(pt)
    with torch.no_grad():
        own = dict(po.named_parameters())
        for n, p in pt.named_parameters():
            if p.requires_grad:
                own[n].copy_(p)
    # same weights: same loss and the same gradients through the MLP
    out_o, out_t = po(**b, labels=b["input_ids"]), pt(**b, labels=b["input_ids"])
    assert_close(out_o.logits, out_t.logits, atol=1e-5, what=f"{name}: projected prefix logits")
    out_o.loss.backward()
    out_t.loss.backward()
    grads_t = {n: p.grad for n, p in pt.named_parameters() if p.requires_grad}
    for n, p in po.named_parameters():
        if p.requires_grad:
            assert_close(p.grad, grads_t[n], atol=1e-5, what=f"grad of {n}")
    pt.eval()
    ref = logits(pt, b)
    # files both ways: both save only the projected prefixes, as prompt_embeddings
    pt.save_pretrained(tmp_path / "theirs")
    po.save_pretrained(tmp_path / "ours")
    a, o = load_file(str(tmp_path / "theirs/adapter_model.safetensors")), load_file(str(tmp_path / "ours/adapter_model.safetensors"))
    assert sorted(a) == sorted(o) == ["prompt_embeddings"]
    assert_close(o["prompt_embeddings"], a["prompt_embeddings"], atol=1e-6, what="saved prefixes")
    loaded = PeftModel.from_pretrained(load_pair(ref_dirs, name)[1], tmp_path / "theirs")
    assert_close(logits(loaded, b), ref, atol=1e-5, what=f"{name}: peft's projected adapter here")
    back = peft.PeftModel.from_pretrained(load_pair(ref_dirs, name)[0], tmp_path / "ours").eval()
    assert_close(logits(back, b), ref, atol=1e-5, what=f"{name}: our projected adapter in peft")
    gen_o = loaded.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], max_new_tokens=3, do_sample=False)
    gen_t = back.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], max_new_tokens=3, do_sample=False)
    assert torch.equal(gen_o, gen_t)
    # peft's file cannot restore the MLP: training it again from that file is refused, clearly; ours
    # carries the table and MLP in prefix_encoder.safetensors, so training resumes from it exactly
    with pytest.raises(ValueError, match="prefix_projection"):
        PeftModel.from_pretrained(load_pair(ref_dirs, name)[1], tmp_path / "theirs", is_trainable=True)
    resumed = PeftModel.from_pretrained(load_pair(ref_dirs, name)[1], tmp_path / "ours", is_trainable=True)
    mine = dict(po.named_parameters())
    for n, p in resumed.named_parameters():
        if n.startswith("prompt_encoder."):
            assert p.requires_grad and torch.equal(p, mine[n]), n
    assert_close(logits(resumed, b), ref, atol=1e-5, what=f"{name}: resumed projected prefix")


def test_prefix_zero_init(ref_dirs):
    _, ours = load_pair(ref_dirs, "llama_lm")
    for projection in (False, True):
        po = get_peft_model(ours, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2, init_weights="zero",
                                                     prefix_projection=projection))
        assert po.prompt_encoder["default"].flat_prompt().abs().max() == 0
        ours = po.get_base_model()
    with pytest.raises(ValueError, match="init_weights"):
        PrefixTuningConfig(num_virtual_tokens=2, init_weights="ones")
