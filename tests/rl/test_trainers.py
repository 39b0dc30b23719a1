"""Data shapes, options and reference handling of the post-training trainers (tiny 64-word model)."""
from __future__ import annotations

import pytest
import torch

from tests.rl.helpers import tiny_word_llama, word_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return word_tokenizer(tmp_path_factory.mktemp("tok"))


def _sft(tok, tmp_path, data, **kw):
    from openformers.rl import SFTConfig, SFTTrainer

    formatting_func = kw.pop("formatting_func", None)
    args = SFTConfig(str(tmp_path / "out"), gradient_checkpointing=False, **kw)
    return SFTTrainer(tiny_word_llama(), args=args, train_dataset=data, formatting_func=formatting_func, tokenizer=tok)


def test_sft_text_field_formatting_func_and_max_length(tok, tmp_path):
    t = _sft(tok, tmp_path, [{"body": "cat dog sun"}], dataset_text_field="body")
    assert t.train_dataset[0]["input_ids"] == tok("cat dog sun </s>")["input_ids"]  # EOS added once
    t = _sft(tok, tmp_path, [{"a": "cat", "b": "dog"}], formatting_func=lambda e: f"{e['a']} and {e['b']}")
    assert tok.decode(t.train_dataset[0]["input_ids"]) == "cat and dog </s>"
    t = _sft(tok, tmp_path, [{"text": "cat dog sun moon red"}], max_length=3)
    assert len(t.train_dataset[0]["input_ids"]) == 3
    with pytest.raises(ValueError, match="dataset_text_field"):
        _sft(tok, tmp_path, [{"body": "cat"}])


def test_sft_conversational_shapes_and_masks(tok, tmp_path):
    chat = [{"role": "user", "content": "say cat"}, {"role": "assistant", "content": "cat cat"},
            {"role": "user", "content": "say dog"}, {"role": "assistant", "content": "dog"}]
    t = _sft(tok, tmp_path, [{"messages": chat}], assistant_only_loss=True)
    row = t.train_dataset[0]
    assert row["input_ids"] == tok.apply_chat_template(chat)
    batch = t.data_collator([row])
    kept = [i for i, lab in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if lab != -100]
    assert tok.decode(kept) == "cat cat <|im_end|> dog <|im_end|>"  # both assistant turns, nothing else
    t = _sft(tok, tmp_path, [{"prompt": chat[:1], "completion": chat[1:2]}])
    batch = t.data_collator([t.train_dataset[0]])
    kept = [i for i, lab in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if lab != -100]
    assert tok.decode(kept) == "cat cat <|im_end|>"
    t = _sft(tok, tmp_path, [{"prompt": "say cat", "completion": " cat"}], completion_only_loss=False)
    batch = t.data_collator([t.train_dataset[0]])
    assert (batch["labels"] != -100).all()


def test_sft_lora_trains_only_the_adapter(tok, tmp_path):
    from openformers.peft import LoraConfig
    from openformers.rl import SFTConfig, SFTTrainer

    model = tiny_word_llama()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    args = SFTConfig(str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
                     save_strategy="no", disable_tqdm=True)  # gradient checkpointing on, as TRL's default
    trainer = SFTTrainer(model, args=args, train_dataset=[{"text": "cat dog sun"}] * 4, processing_class=tok,
                         peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainer.train()
    lora = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    merged = trainer.model.get_base_model().state_dict()
    assert all(torch.equal(merged[k], v) for k, v in base.items() if k in merged)  # base weights untouched
    assert any(float(p.detach().abs().sum()) > 0 for n, p in trainer.model.named_parameters() if "lora_B" in n)


def test_sft_qlora_on_a_4bit_nf4_base(tok, tmp_path):
    """QLoRA: the base loaded in 4-bit NF4 (BitsAndBytesConfig), a LoRA trained on it by SFTTrainer; the packed
    4-bit weights stay as loaded and the loss falls."""
    from openformers import AutoModelForCausalLM, BitsAndBytesConfig
    from openformers.peft import LoraConfig
    from openformers.rl import SFTConfig, SFTTrainer

    tiny_word_llama().save_pretrained(tmp_path / "base")
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base", quantization_config=q)
    packed = {k: v.clone() for k, v in model.state_dict().items() if v.dtype == torch.uint8}
    assert packed, "no 4-bit weight was loaded"
    args = SFTConfig(str(tmp_path / "out"), max_steps=8, per_device_train_batch_size=4, learning_rate=2e-2,
                     logging_steps=1, save_strategy="no", disable_tqdm=True)
    data = [{"prompt": "say :", "completion": " cat dog sun"}] * 8
    trainer = SFTTrainer(model, args=args, train_dataset=data, processing_class=tok,
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0] - 0.2 and all(b <= a for a, b in zip(losses, losses[1:])), losses
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)
    after = {k.replace(".base_layer", ""): v for k, v in trainer.model.get_base_model().state_dict().items()}
    for k, v in packed.items():
        assert torch.equal(after[k], v), k


PAIRS = [{"prompt": "pick :", "chosen": " good cat", "rejected": " bad dog"}] * 4


def test_dpo_reference_is_the_disabled_adapter_without_a_copy(tok, tmp_path):
    from openformers.peft import LoraConfig
    from openformers.rl import DPOConfig, DPOTrainer
    from openformers.rl.dpo import sequence_log_probs

    model = tiny_word_llama()
    plain = tiny_word_llama()  # the same weights, no adapter
    args = DPOConfig(str(tmp_path / "out"), gradient_checkpointing=False, per_device_train_batch_size=4)
    trainer = DPOTrainer(model, args=args, train_dataset=PAIRS, processing_class=tok,
                         peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert trainer.ref_model is None
    batch = trainer.data_collator(trainer.train_dataset)
    with torch.no_grad():
        with trainer._reference() as ref:
            ref_logps, _ = sequence_log_probs(ref, batch)
        policy_logps, _ = sequence_log_probs(trainer.model, batch)
        torch.testing.assert_close(ref_logps, sequence_log_probs(plain, batch)[0])
    assert not torch.allclose(policy_logps, ref_logps)  # the adapter is back on after the block


def test_dpo_and_reward_read_preference_pairs_alike(tok, tmp_path):
    """One reader of preference pairs: the same text gives the same tokens to both trainers, and each
    takes the other's token columns as they are."""
    from openformers.rl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    dpo = DPOTrainer(tiny_word_llama(), args=DPOConfig(str(tmp_path / "d"), gradient_checkpointing=False),
                     train_dataset=PAIRS[:1], processing_class=tok)
    reward = RewardTrainer(tiny_word_llama(classifier=True), args=RewardConfig(str(tmp_path / "r"), gradient_checkpointing=False),
                           train_dataset=PAIRS[:1], processing_class=tok)
    d, r = dpo.train_dataset[0], reward.train_dataset[0]
    assert d["prompt_ids"] == tok("pick :")["input_ids"] and d["chosen_ids"][-1] == tok.eos_token_id
    assert r == {"chosen_input_ids": d["prompt_ids"] + d["chosen_ids"], "rejected_input_ids": d["prompt_ids"] + d["rejected_ids"]}
    assert RewardTrainer._tokenize([d], tok, reward.args) == [r]
    assert DPOTrainer._tokenize([r], tok, dpo.args) == [{"prompt_ids": [], "chosen_ids": r["chosen_input_ids"],
                                                         "rejected_ids": r["rejected_input_ids"]}]


def test_dpo_precomputed_reference_log_probs(tok, tmp_path):
    from openformers.rl import DPOConfig, DPOTrainer
    from openformers.rl.dpo import sequence_log_probs

    args = DPOConfig(str(tmp_path / "out"), gradient_checkpointing=False, precompute_ref_log_probs=True,
                     per_device_train_batch_size=4)
    trainer = DPOTrainer(tiny_word_llama(), args=args, train_dataset=PAIRS, processing_class=tok)
    assert trainer.ref_model is None  # no copy: computed once from the initial model
    rows = trainer.train_dataset
    logps, _ = sequence_log_probs(tiny_word_llama(), trainer.data_collator(rows))
    chosen, rejected = logps.chunk(2)
    assert [r["ref_chosen_logps"] for r in rows] == pytest.approx(chosen.tolist(), abs=1e-5)
    assert [r["ref_rejected_logps"] for r in rows] == pytest.approx(rejected.tolist(), abs=1e-5)
    batch = trainer.data_collator(rows)
    assert "ref_chosen_logps" in batch
    loss = trainer.compute_loss(trainer.model, batch)
    assert float(loss.detach()) == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start


def test_grpo_reward_model_and_weights(tok, tmp_path):
    from openformers.rl import GRPOConfig, GRPOTrainer

    scorer = tiny_word_llama(seed=3, classifier=True)

    def length(completion_ids, **_):
        return [float(len(c)) for c in completion_ids]

    args = GRPOConfig(str(tmp_path / "out"), gradient_checkpointing=False, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=5, reward_weights=[0.5, 2.0])
    trainer = GRPOTrainer(tiny_word_llama(), reward_funcs=[length, scorer], args=args,
                          train_dataset=[{"prompt": "say cat :"}], processing_class=tok, reward_processing_classes=tok)
    batch = trainer._generate_and_score([{"prompt": "say cat :"}])
    lengths = batch["completion_mask"].sum(1).float()
    texts = ["say cat :" + tok.decode(c[: int(n)].tolist(), skip_special_tokens=True)
             for c, n in zip(batch["completion_ids"], lengths)]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        scores = scorer(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0]
    rewards = 0.5 * lengths + 2.0 * scores
    expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    torch.testing.assert_close(batch["advantages"], expected, rtol=1e-4, atol=1e-4)


def test_grpo_num_iterations_reuses_each_batch_of_rollouts(tok, tmp_path):
    """num_iterations=2: rollouts every other optimizer step, each prompt batch served twice (an epoch has
    twice the steps), and the sampling policy's log-probs kept, equal to the policy's own at sampling."""
    from openformers.rl import GRPOConfig, GRPOTrainer

    calls = []

    def has_cat(completions, **_):
        calls.append(len(completions))
        return [float("cat" in c) for c in completions]

    data = [{"prompt": f"say {w} :"} for w in ("cat", "dog", "sun", "moon")]
    args = GRPOConfig(str(tmp_path / "out"), gradient_checkpointing=False, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=4, num_iterations=2, gradient_accumulation_steps=2,
                      num_train_epochs=1, learning_rate=1e-2, beta=0.1, logging_steps=1, save_strategy="no",
                      report_to="none")
    trainer = GRPOTrainer(tiny_word_llama(), reward_funcs=has_cat, args=args, train_dataset=data, processing_class=tok)
    loader = trainer.get_train_dataloader()
    batches = [tuple(r["prompt"] for r in b) for b in loader]
    assert len(loader) == len(batches) == 8 and batches[:2] == batches[2:4] and batches[4:6] == batches[6:8]
    assert set(batches[:2]) != set(batches[4:6])
    rollout = trainer._generate_and_score(data[:1])
    torch.testing.assert_close(rollout["old_per_token_logps"], trainer._per_token_logps(trainer.model, rollout))
    calls.clear()
    out = trainer.train()
    assert out.global_step == 4 and calls == [4] * 4  # 2 micro-batches rolled out on steps 1 and 3 only
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and losses[0] != losses[1]  # the second step sees the updated policy through the ratio
    with pytest.raises(ValueError, match="num_iterations"):
        GRPOConfig("o", num_iterations=0)


def test_config_checks():
    from openformers.rl import DPOConfig, GRPOConfig, SFTConfig

    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig("o", loss_type="bogus")
    with pytest.raises(ValueError, match="num_generations"):
        GRPOConfig("o", num_generations=1)
    with pytest.raises(ValueError, match="truncation_mode"):
        SFTConfig("o", truncation_mode="middle")
    assert SFTConfig("o").learning_rate == 2e-5 and DPOConfig("o").beta == 0.1 and GRPOConfig("o").loss_type == "dapo"


def test_grpo_lora_rollouts_run_on_the_decode_plan(tok, tmp_path, monkeypatch):
    """With a LoRA adapter, every rollout's generate calls run on the runtime's decode plan (merged copies of the
    adapted weights, runtime/adapters.py), remade after each optimizer step: after training, a rollout samples the
    tokens of the module path from the same seed."""
    from openformers.peft import LoraConfig
    from openformers.rl import GRPOConfig, GRPOTrainer
    from openformers.runtime import adapters, decode, decoder

    plans = []
    real = decode.plan_for
    monkeypatch.setattr(decoder, "plan_for", lambda m: plans.append(real(m)) or plans[-1])
    data = [{"prompt": f"say {w} :"} for w in ("cat", "dog", "sun", "moon")]
    args = GRPOConfig(str(tmp_path / "out"), gradient_checkpointing=False, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=4, max_steps=2, learning_rate=5e-2, beta=0.0,
                      logging_steps=1, save_strategy="no", report_to="none")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    trainer = GRPOTrainer(tiny_word_llama(), reward_funcs=lambda completions, **_: [float(len(c)) for c in completions],
                          args=args, train_dataset=data, processing_class=tok, peft_config=lora)
    trainer.train()
    assert plans and all(p is not None for p in plans)  # both steps' rollouts: prefill and every decode step
    q = trainer.model.base_model.model.model.layers[0].self_attn.q_proj
    assert float(q.lora_B["default"].weight.detach().abs().sum()) > 0  # the steps moved the adapter
    plans.clear()
    torch.manual_seed(7)
    on_plan = trainer._generate_and_score(data[:1])
    assert plans and all(p is not None for p in plans)
    torch.testing.assert_close(adapters.merged_of(q).weight, q.base_layer.weight + q.get_delta_weight("default"),
                               atol=1e-6, rtol=0)
    monkeypatch.setattr(decoder, "plan_for", lambda m: None)
    torch.manual_seed(7)
    on_modules = trainer._generate_and_score(data[:1])
    assert torch.equal(on_plan["completion_ids"], on_modules["completion_ids"])
