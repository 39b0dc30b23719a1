"""LoRA parity with the peft package on tiny random Llama, GPT-2 and BERT models."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from safetensors.torch import load_file

import openformers
from openformers.peft import LoraConfig, PeftModel, get_peft_model
from tests.models.parity import assert_close
from tests.peft.conftest import batch, load_pair

peft = pytest.importorskip("peft")

CASES = [
    ("llama_lm", "CAUSAL_LM", None),
    ("gpt2_lm", "CAUSAL_LM", None),
    ("bert_cls", "SEQ_CLS", None),
    ("llama_cls", "SEQ_CLS", None),
    ("gpt2_cls", "SEQ_CLS", None),
    ("bert_tok", "TOKEN_CLS", None),
    ("llama_lm", "CAUSAL_LM", "all-linear"),
]


def printed(model) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.print_trainable_parameters()
    return buf.getvalue()


def logits(model, b):
    with torch.no_grad():
        return model(**b).logits


@pytest.mark.parametrize("name,task,targets", CASES)
def test_lora_parity_both_ways(ref_dirs, tmp_path, name, task, targets):
    theirs, ours = load_pair(ref_dirs, name)
    kw = dict(r=4, lora_alpha=8, task_type=task, init_lora_weights=False, target_modules=targets)
    torch.manual_seed(1)
    pt = peft.get_peft_model(theirs, peft.LoraConfig(**kw))
    po = get_peft_model(ours, LoraConfig(**kw))
    # same trainable parameters, same printed line
    assert printed(po) == printed(pt)
    assert po.get_nb_trainable_parameters() == pt.get_nb_trainable_parameters()
    pt_names = {n for n, p in pt.named_parameters() if p.requires_grad}
    po_names = {n for n, p in po.named_parameters() if p.requires_grad}
    assert po_names == pt_names
    # their adapter -> ours
    pt.save_pretrained(tmp_path / "theirs")
    ours2 = load_pair(ref_dirs, name)[1]
    loaded = PeftModel.from_pretrained(ours2, tmp_path / "theirs")
    assert not any(p.requires_grad for p in loaded.parameters())
    b = batch()
    pt.eval()
    ref = logits(pt, b)
    assert_close(logits(loaded, b), ref, atol=1e-5, what=f"{name}: peft adapter loaded here")
    # ours -> theirs: same files, same keys
    loaded.save_pretrained(tmp_path / "ours")
    a = load_file(str(tmp_path / "theirs" / "adapter_model.safetensors"))
    o = load_file(str(tmp_path / "ours" / "adapter_model.safetensors"))
    assert sorted(a) == sorted(o)
    for k in a:
        assert torch.equal(a[k], o[k]), k
    theirs2 = load_pair(ref_dirs, name)[0]
    back = peft.PeftModel.from_pretrained(theirs2, tmp_path / "ours").eval()
    assert_close(logits(back, b), ref, atol=1e-5, what=f"{name}: our adapter loaded by peft")
    cfg = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == task and cfg["inference_mode"] is True
    # merged weights equal
    merged_t = back.merge_and_unload().state_dict()
    merged_o = loaded.merge_and_unload().state_dict()
    for k, v in merged_t.items():
        if k in merged_o:
            assert_close(merged_o[k], v, atol=1e-6, what=f"merged {k}")
    assert not any(".lora_" in k for k in merged_o)
    assert_close(logits(loaded.get_base_model() if hasattr(loaded, "get_base_model") else loaded, b), ref, atol=1e-5)


def test_gpt2_conv1d_fan_in_fan_out(ref_dirs):
    _, ours = load_pair(ref_dirs, "gpt2_lm")
    config = LoraConfig(r=2, target_modules=["c_attn"])
    po = get_peft_model(ours, config)
    layer = po.base_model.model.transformer.h[0].attn.c_attn
    assert layer.fan_in_fan_out and po.peft_config["default"].fan_in_fan_out
    assert layer.lora_A["default"].weight.shape == (2, 32) and layer.lora_B["default"].weight.shape == (96, 2)


@pytest.mark.parametrize("extra", [dict(use_dora=True), dict(use_rslora=True), dict(init_lora_weights="gaussian"),
                                   dict(layers_to_transform=[1]), dict(layers_to_transform=[0], layers_pattern="layers"),
                                   dict(target_modules=r".*\.(q_proj|o_proj)"), dict(target_modules=["embed_tokens", "q_proj"]),
                                   dict(bias="all", target_modules=["q_proj"]), dict(lora_dropout=0.1)])
def test_lora_options_match_peft(ref_dirs, tmp_path, extra):
    theirs, ours = load_pair(ref_dirs, "llama_lm")
    kw = {**dict(r=4, lora_alpha=16, task_type="CAUSAL_LM", init_lora_weights=False), **extra}
    pt = peft.get_peft_model(theirs, peft.LoraConfig(**kw))
    po = get_peft_model(ours, LoraConfig(**kw))
    assert printed(po) == printed(pt)
    assert {n for n, p in po.named_parameters() if p.requires_grad} == {n for n, p in pt.named_parameters() if p.requires_grad}
    # load their (random) adapter weights into ours and compare outputs and merged weights
    with torch.no_grad():
        for p in pt.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    pt.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(load_pair(ref_dirs, "llama_lm")[1], tmp_path)
    pt.eval()
    b = batch()
    ref = logits(pt, b)
    assert_close(logits(loaded, b), ref, atol=1e-5, what=str(extra))
    loaded.merge_adapter()
    assert_close(logits(loaded, b), ref, atol=1e-4, what=f"merged {extra}")
    loaded.unmerge_adapter()
    assert_close(logits(loaded, b), ref, atol=1e-5, what=f"unmerged {extra}")
    merged_t = pt.merge_and_unload().state_dict()
    merged_o = loaded.merge_and_unload().state_dict()
    for k, v in merged_t.items():
        assert_close(merged_o[k], v, atol=1e-5, what=f"merged {k}")


def test_multiple_adapters_and_disable(ref_dirs, tmp_path):
    theirs, ours = load_pair(ref_dirs, "llama_lm")
    b = batch()
    base = logits(ours, b)
    po = get_peft_model(ours, LoraConfig(r=4, init_lora_weights=False), adapter_name="a")
    po.add_adapter("b", LoraConfig(r=2, init_lora_weights=False, target_modules=["k_proj"]))
    out_a = logits(po, b)
    po.set_adapter("b")
    out_b = logits(po, b)
    assert not torch.allclose(out_a, out_b)
    assert {n.split(".")[-2] for n, p in po.named_parameters() if p.requires_grad} == {"b"}
    with po.disable_adapter():
        assert_close(logits(po, b), base, what="disabled")
    assert_close(logits(po, b), out_b, what="re-enabled")
    po.save_pretrained(tmp_path)
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()  # non-default adapters in subfolders
    assert (tmp_path / "b" / "adapter_config.json").is_file()
    loaded = PeftModel.from_pretrained(load_pair(ref_dirs, "llama_lm")[1], tmp_path / "a", adapter_name="a")
    loaded.load_adapter(tmp_path / "b", adapter_name="b")
    assert_close(logits(loaded, b), out_a, what="loaded a")
    loaded.set_adapter("b")
    assert_close(logits(loaded, b), out_b, what="loaded b")
    loaded.delete_adapter("b")
    assert set(loaded.peft_config) == {"a"} and loaded.active_adapter == "a"
    assert not any(".b." in n for n, _ in loaded.named_parameters())
    with pytest.raises(ValueError, match="unknown adapter 'zzz'"):
        loaded.set_adapter("zzz")


@pytest.mark.parametrize("combination", ["linear", "cat"])
def test_add_weighted_adapter_matches_peft(ref_dirs, tmp_path, combination):
    theirs, ours = load_pair(ref_dirs, "llama_lm")
    torch.manual_seed(0)
    pt = peft.get_peft_model(theirs, peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False), adapter_name="x")
    pt.add_adapter("y", peft.LoraConfig(r=4, lora_alpha=4, init_lora_weights=False))
    pt.save_pretrained(tmp_path)
    po = PeftModel.from_pretrained(ours, tmp_path / "x", adapter_name="x")
    po.load_adapter(tmp_path / "y", adapter_name="y")
    pt.add_weighted_adapter(["x", "y"], [0.7, 0.3], "xy", combination_type=combination)
    po.add_weighted_adapter(["x", "y"], [0.7, 0.3], "xy", combination_type=combination)
    pt.set_adapter("xy")
    po.set_adapter("xy")
    pt.eval()
    b = batch()
    assert_close(logits(po, b), logits(pt, b), atol=1e-5, what=combination)


def test_clear_errors(ref_dirs, tmp_path):
    _, ours = load_pair(ref_dirs, "llama_lm")
    with pytest.raises(ValueError, match="candidate module names: .*q_proj"):
        get_peft_model(ours, LoraConfig(target_modules=["nope_proj"]))
    with pytest.raises(ValueError, match="r must be a positive integer"):
        LoraConfig(r=0)
    with pytest.raises(ValueError, match="not supported"):
        get_peft_model(ours, LoraConfig(target_modules=["self_attn"]))
    # an adapter saved for a larger model does not load silently
    big = openformers.LlamaForCausalLM(openformers.LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=64,
                                                               num_hidden_layers=2, num_attention_heads=4,
                                                               num_key_value_heads=2))
    pm = get_peft_model(big, LoraConfig(r=2, base_model_name_or_path="big-model"))
    pm.save_pretrained(tmp_path)
    _, ours = load_pair(ref_dirs, "llama_lm")
    with pytest.raises(ValueError, match=r"big-model.*saved \[2, 48\] vs model \[2, 32\]"):
        PeftModel.from_pretrained(ours, tmp_path)


def test_auto_peft_models(ref_dirs, tmp_path):
    from openformers.peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    for name, auto, task in [("llama_lm", AutoPeftModelForCausalLM, "CAUSAL_LM"),
                             ("bert_cls", AutoPeftModelForSequenceClassification, "SEQ_CLS")]:
        _, ours = load_pair(ref_dirs, name)
        po = get_peft_model(ours, LoraConfig(r=2, task_type=task, init_lora_weights=False))
        assert po.peft_config["default"].base_model_name_or_path == str(ref_dirs[name])
        po.save_pretrained(tmp_path / name)
        b = batch()
        loaded = auto.from_pretrained(tmp_path / name)
        assert_close(logits(loaded, b), logits(po.eval(), b), what=name)


def test_generate_through_lora_matches_peft(ref_dirs, tmp_path):
    theirs, ours = load_pair(ref_dirs, "llama_lm")
    pt = peft.get_peft_model(theirs, peft.LoraConfig(r=4, lora_alpha=32, init_lora_weights=False)).eval()
    pt.save_pretrained(tmp_path)
    po = PeftModel.from_pretrained(ours, tmp_path)
    b = batch()
    gen_t = pt.generate(**b, max_new_tokens=5, do_sample=False)
    gen_o = po.generate(**b, max_new_tokens=5, do_sample=False)
    assert torch.equal(gen_o, gen_t)
