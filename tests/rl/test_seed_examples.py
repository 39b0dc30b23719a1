"""The seed documents' PPO and SFT examples, as written, with only the imports changed and a tiny
local model directory in place of the hub name "gpt2"."""
from __future__ import annotations

import os

import pytest

from tests.rl.helpers import tiny_gpt2_dir

SHAKESPEARE = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?
"""


@pytest.fixture()
def gpt2(tmp_path, monkeypatch):
    tiny_gpt2_dir(tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)  # "gpt2" and "tiny_shakespeare" resolve to local directories
    (tmp_path / "tiny_shakespeare").mkdir()
    (tmp_path / "tiny_shakespeare" / "train.txt").write_text(SHAKESPEARE * 2)
    return "gpt2"


def test_seed_ppo_example(gpt2):
    from openformers import AutoModelForCausalLM, AutoTokenizer
    from openformers.rl import PPOConfig, PPOTrainer

    tokenizer = AutoTokenizer.from_pretrained("gpt2")
    model = AutoModelForCausalLM.from_pretrained("gpt2")

    config = PPOConfig(batch_size=8)
    ppo_trainer = PPOTrainer(config, model, None, tokenizer)

    queries = ["Hello, how are you?"] * 8
    query_tensors = [tokenizer(q, return_tensors="pt").input_ids for q in queries]
    responses = [model.generate(q, max_length=20) for q in query_tensors]

    rewards = [1.0] * 8  # 임의의 보상 값
    stats = ppo_trainer.step(query_tensors, responses, rewards)

    # what the step saw and did
    n_query = query_tensors[0].shape[1]
    assert stats["tokens/queries_len_mean"] == n_query
    assert stats["tokens/responses_len_mean"] == 20 - n_query  # the query was taken off each response
    assert stats["ppo/mean_scores"] == 1.0
    for key in ("ppo/loss/total", "ppo/loss/policy", "ppo/loss/value", "ppo/policy/clipfrac", "objective/kl",
                "objective/kl_coef", "ppo/returns/mean", "ppo/val/vpred", "time/ppo/total"):
        assert key in stats, key
    assert stats["objective/kl"] == 0.0  # the first step's policy is the reference


def test_seed_sft_example(gpt2):
    from openformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from openformers.data import load_dataset

    model_name = "gpt2"
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name)

    dataset = load_dataset("tiny_shakespeare")

    def tokenize_function(examples):
        return tokenizer(examples["text"], truncation=True, padding="max_length", max_length=128)

    tokenized_datasets = dataset.map(tokenize_function, batched=True)

    training_args = TrainingArguments(output_dir="./results", per_device_train_batch_size=4, num_train_epochs=1)
    trainer = Trainer(model=model, args=training_args, train_dataset=tokenized_datasets["train"])
    trainer.train()

    assert os.path.isdir("results")
    losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
    assert losses and 9.0 < losses[0] < 12.0  # a language-modelling loss over 49152 tokens, padding left out
