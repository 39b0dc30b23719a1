"""PEFT models under the Trainer (adapter-only checkpoints, exact resume) and QLoRA hooks."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from openformers import Trainer, TrainingArguments
from openformers.peft import LoraConfig, LoraLinear, get_peft_model, max_logit_change, prepare_model_for_kbit_training
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2


def _peft_gpt2():
    model = get_peft_model(tiny_gpt2(), LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", lora_dropout=0.1))
    return model


def _trainer(out: Path, model, max_steps: int = 6) -> Trainer:
    args = TrainingArguments(str(out), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=1e-2,
                             save_steps=3, report_to="none", disable_tqdm=True, logging_steps=1, seed=0)
    return Trainer(model=model, args=args, train_dataset=ragged_lm_data(32), data_collator=pad_collator)


def _adapter(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def test_trainer_saves_adapter_only_and_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    full = _peft_gpt2()
    base_before = {k: v.clone() for k, v in full.state_dict().items() if "lora_" not in k}
    t = _trainer(tmp_path / "full", full)
    t.train()
    ckpt = tmp_path / "full" / "checkpoint-3"
    files = {p.name for p in ckpt.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert "model.safetensors" not in files
    assert (ckpt / "adapter_model.safetensors").stat().st_size < 100_000
    # only the adapter moved; the loss fell
    assert all(torch.equal(v, full.state_dict()[k]) for k, v in base_before.items())
    losses = [h["loss"] for h in t.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]
    # resume a fresh wrapper from the step-3 checkpoint: identical final adapter
    torch.manual_seed(0)
    resumed = _peft_gpt2()
    t2 = _trainer(tmp_path / "full", resumed)
    t2.train(resume_from_checkpoint=str(ckpt))
    for k, v in _adapter(full).items():
        assert torch.equal(_adapter(resumed)[k], v), k


def test_lora_on_quantized_linear_and_merge(tmp_path):
    from openformers.quantization import QuantizedLinear

    from openformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    for layer in model.model.layers:
        # only adapter-wrapped layers are quantized: QuantizedLinear itself has no input gradient yet
        for name in ("q_proj", "v_proj"):
            setattr(layer.self_attn, name, QuantizedLinear.from_linear(getattr(layer.self_attn, name), 32, torch.float32))
    model = prepare_model_for_kbit_training(model)
    assert model.is_gradient_checkpointing
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    wrapped = pm.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(wrapped, LoraLinear) and isinstance(wrapped.base_layer, QuantizedLinear)
    x = torch.randn(2, 5, 64)
    expected = wrapped.base_layer(x) + wrapped.lora_B["default"](wrapped.lora_A["default"](x)) * 2.0
    torch.testing.assert_close(wrapped(x), expected)
    # training through gradient checkpointing reaches the adapter only
    pm.train()
    ids = torch.randint(0, 64, (2, 8))
    pm(input_ids=ids, labels=ids).loss.backward()
    assert wrapped.lora_A["default"].weight.grad is not None
    assert all(p.grad is None for n, p in pm.named_parameters() if "lora_" not in n)
    with pytest.raises(ValueError, match="merge_and_unload"):
        pm.merge_adapter()
    pm.eval()
    batch = {"input_ids": ids}
    with torch.no_grad():
        before = pm(**batch).logits.clone()
    merged = pm.merge_and_unload()
    assert isinstance(merged.model.layers[0].self_attn.q_proj, nn.Linear)
    with torch.no_grad():
        change = float((merged(**batch).logits - before).abs().max())
    assert change < 1e-3
    assert max_logit_change(merged, merged, batch) == 0.0


@pytest.mark.parametrize("quant", ["nf4", "int8", "gguf"])
def test_parameter_count_of_a_quantized_base_counts_logical_weights(quant):
    """peft counts a 4-bit weight as its unpacked number of values; so do we, for every quantized layer."""
    from openformers.quantization import Linear4bit, Linear8bitLt, QuantizedLinear

    from openformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    expected = get_peft_model(LlamaForCausalLM(cfg), lora).get_nb_trainable_parameters()
    model = LlamaForCausalLM(cfg)
    for layer in model.model.layers:
        for owner in (layer.self_attn, layer.mlp):
            for name, child in list(owner.named_children()):
                if quant == "nf4":
                    new = Linear4bit.from_linear(child, quant_type="nf4", compress_statistics=True)
                elif quant == "int8":
                    new = Linear8bitLt.from_linear(child)
                else:
                    new = QuantizedLinear.from_linear(child, 32, torch.float32)
                setattr(owner, name, new)
    counts = get_peft_model(model, lora).get_nb_trainable_parameters()
    assert counts == expected
