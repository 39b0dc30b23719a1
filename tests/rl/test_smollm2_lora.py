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


@pytest.mark.long  # a few minutes on 2 cores: python -m pytest -m long tests/rl/test_smollm2_lora.py
def test_sft_with_lora_teaches_smollm2_to_follow_the_chat_template(tmp_path):
    """After a short SFT with LoRA (assistant turns only), SmolLM2's greedy answers to held-out chat prompts
    take the taught form (``RESULT: <answer> [END]``) and close the turn with the template's end-of-turn
    token, where before training they did neither."""
    import json
    from pathlib import Path

    from openformers import AutoModelForCausalLM, AutoTokenizer
    from openformers.peft import LoraConfig
    from openformers.rl import SFTConfig, SFTTrainer

    data = [json.loads(line) for line in
            (Path(__file__).parents[2] / "examples" / "data" / "instructions.jsonl").read_text().splitlines() if line]
    held, train = data[:4], data[12:]
    tok = AutoTokenizer.from_pretrained("smollm2")
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                   tokenize=False).rstrip().endswith("<|im_end|>")

    def answers(model):
        model.eval()
        out = []
        for row in held:
            ids = tok.apply_chat_template([{"role": "user", "content": row["instruction"]}], add_generation_prompt=True,
                                          return_tensors="pt")
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                     do_sample=False, eos_token_id=end_of_turn)
            out.append(gen[0, ids.shape[1]:].tolist())
        return out

    def follows(ids):
        text = tok.decode(ids[:-1]).strip()
        return ids[-1] == end_of_turn and text.startswith("RESULT: ") and text.endswith(" [END]")

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained("smollm2")
    assert not any(follows(a) for a in answers(model))
    convs = [{"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]}
             for r in train]
    args = SFTConfig(str(tmp_path / "sft"), max_steps=12, per_device_train_batch_size=8, learning_rate=3e-3,
                     logging_steps=1, save_strategy="no", disable_tqdm=True, assistant_only_loss=True, max_length=96,
                     gradient_checkpointing=False, seed=0)
    trainer = SFTTrainer(model, args=args, train_dataset=convs, processing_class=tok,
                         peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    trainer.train()
    after = answers(trainer.model)
    texts = [tok.decode(a) for a in after]
    assert sum(follows(a) for a in after) >= len(held) - 1, texts
