"""SmolLM2 (the embedded GGUF) with LoRA through the post-training trainers: keep-quantized weights."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.long  # several minutes on 2 cores: python -m pytest -m long tests/rl/test_smollm2_lora.py
def test_sft_and_dpo_with_lora_on_keep_quantized_gguf(tmp_path):
    from openformers import AutoModelForCausalLM, AutoTokenizer
    from openformers.peft import LoraConfig
    from openformers.quantization import GGUFQuantizationConfig
    from openformers.rl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained("smollm2")
    chats = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": f"RESULT: {w} [END]"}]}
             for w in ("cat", "dog", "sun", "moon")]
    model = AutoModelForCausalLM.from_pretrained("smollm2", quantization_config=GGUFQuantizationConfig())
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    args = SFTConfig(str(tmp_path / "sft"), max_steps=3, per_device_train_batch_size=4, learning_rate=2e-3,
                     logging_steps=1, save_strategy="no", disable_tqdm=True, assistant_only_loss=True)
    sft = SFTTrainer(model, args=args, train_dataset=chats, processing_class=tok, peft_config=lora)
    sft.train()
    losses = [h["loss"] for h in sft.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]
    assert all(not p.requires_grad for n, p in sft.model.named_parameters() if "lora_" not in n)

    pairs = [{"prompt": c["messages"][:1], "chosen": c["messages"][1:],
              "rejected": [{"role": "assistant", "content": "No."}]} for c in chats]
    model = AutoModelForCausalLM.from_pretrained("smollm2", quantization_config=GGUFQuantizationConfig())
    dpo = DPOTrainer(model, args=DPOConfig(str(tmp_path / "dpo"), max_steps=3, per_device_train_batch_size=4,
                                           learning_rate=2e-3, logging_steps=1, save_strategy="no", disable_tqdm=True),
                     train_dataset=pairs, processing_class=tok, peft_config=lora)
    assert dpo.ref_model is None  # the reference is the quantized base with the adapter disabled
    dpo.train()
    margins = [h["rewards/margins"] for h in dpo.state.log_history if "rewards/margins" in h]
    assert margins[-1] > margins[0]
