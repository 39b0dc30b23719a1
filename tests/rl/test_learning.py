"""Each trainer learns on a tiny model (64-word vocabulary), and SFT, DPO and GRPO resume from a
checkpoint to the losses of an uninterrupted run."""
from __future__ import annotations

import random

import pytest
import torch

from openformers.training.callbacks import TrainerCallback
from tests.rl.helpers import WORDS, tiny_word_llama, word_tokenizer

TARGETS = set(range(3, 11))  # cat dog sun moon red blue yes no


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return word_tokenizer(tmp_path_factory.mktemp("tok"))


def _losses(trainer, key="loss"):
    return [h[key] for h in trainer.state.log_history if key in h and "train_runtime" not in h]


def _args(cls, tmp_path, **kw):
    base = dict(logging_steps=1, save_strategy="no", disable_tqdm=True, gradient_checkpointing=False, seed=0)
    base.update(kw)
    return cls(str(tmp_path / "out"), **base)


def test_sft_loss_falls_on_completions(tok, tmp_path):
    from openformers.rl import SFTConfig, SFTTrainer

    data = [{"prompt": f"say {w} :", "completion": f" {w} {w} ."} for w in WORDS[3:30]]
    trainer = SFTTrainer(tiny_word_llama(), args=_args(SFTConfig, tmp_path, max_steps=20, per_device_train_batch_size=8,
                                                       learning_rate=1e-2), train_dataset=data, processing_class=tok)
    trainer.train()
    losses = _losses(trainer)
    print("SFT loss", [round(x, 3) for x in losses])
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def _preferences(n, seed):
    rng = random.Random(seed)
    filler = WORDS[13:35]
    out = []
    for _ in range(n):
        words = rng.sample(filler, 4)
        out.append({"prompt": "pick one :", "chosen": " " + " ".join(words[:2] + ["good"] + words[2:]),
                    "rejected": " " + " ".join(words[:2] + ["bad"] + words[2:])})
    return out


def test_reward_model_accuracy_on_held_out_pairs(tok, tmp_path):
    from openformers.rl import RewardConfig, RewardTrainer

    trainer = RewardTrainer(tiny_word_llama(classifier=True),
                            args=_args(RewardConfig, tmp_path, max_steps=12, per_device_train_batch_size=8,
                                       learning_rate=5e-3),
                            train_dataset=_preferences(96, 0), eval_dataset=_preferences(48, 1), processing_class=tok)
    before = trainer.evaluate()["eval_accuracy"]
    trainer.train()
    after = trainer.evaluate()["eval_accuracy"]
    print("reward accuracy before", before, "after", after, "train loss", [round(x, 3) for x in _losses(trainer)])
    assert after > 0.9


def test_dpo_margins_and_accuracy_rise(tok, tmp_path):
    from openformers.rl import DPOConfig, DPOTrainer

    trainer = DPOTrainer(tiny_word_llama(), args=_args(DPOConfig, tmp_path, max_steps=15, per_device_train_batch_size=8,
                                                       learning_rate=5e-3, beta=0.1),
                         train_dataset=_preferences(96, 0), processing_class=tok)
    trainer.train()
    margins, accuracies = _losses(trainer, "rewards/margins"), _losses(trainer, "rewards/accuracies")
    print("DPO margins", [round(x, 3) for x in margins], "accuracies", accuracies)
    assert sum(margins[-3:]) / 3 > sum(margins[:3]) / 3 + 0.5
    assert sum(accuracies[-3:]) / 3 > 0.9


def _target_share(completion_ids, **_):
    return [sum(t in TARGETS for t in ids) / max(len(ids), 1) for ids in completion_ids]


def _grpo_args(tmp_path, **kw):
    from openformers.rl import GRPOConfig

    base = dict(per_device_train_batch_size=16, num_generations=8, max_completion_length=6, learning_rate=2e-2,
                beta=0.04, temperature=1.0)
    base.update(kw)
    return _args(GRPOConfig, tmp_path, **base)


def test_grpo_mean_reward_rises_with_bounded_kl(tok, tmp_path):
    from openformers.rl import GRPOTrainer

    data = [{"prompt": f"say {w} :"} for w in WORDS[13:29]]
    trainer = GRPOTrainer(tiny_word_llama(), reward_funcs=_target_share, args=_grpo_args(tmp_path, max_steps=14),
                          train_dataset=data, processing_class=tok)
    trainer.train()
    rewards, kls = _losses(trainer, "reward"), _losses(trainer, "kl")
    print("GRPO reward", [round(x, 3) for x in rewards], "KL", [round(x, 3) for x in kls])
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2
    assert max(kls) < 2.0


# -- resume ------------------------------------------------------------------------------------------
class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def _resume_check(make, tmp_path):
    full = make(tmp_path / "full", save_strategy="no")
    full.train()
    interrupted = make(tmp_path / "run", save_strategy="steps", save_steps=2)
    interrupted.add_callback(_StopAt(2))  # the run dies after its step-2 checkpoint
    interrupted.train()
    resumed = make(tmp_path / "run", save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "out" / "checkpoint-2"))
    expected = _losses(full)[2:]
    got = _losses(resumed)[-2:]
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (got, expected)


def test_sft_resumes_to_the_same_losses(tok, tmp_path):
    from openformers.rl import SFTConfig, SFTTrainer

    data = [{"prompt": f"say {w} :", "completion": f" {w} {w} ."} for w in WORDS[3:30]]

    def make(out, **kw):
        return SFTTrainer(tiny_word_llama(), args=_args(SFTConfig, out, max_steps=4, per_device_train_batch_size=4,
                                                        learning_rate=1e-2, **kw), train_dataset=data,
                          processing_class=tok)

    _resume_check(make, tmp_path)


def test_dpo_resumes_to_the_same_losses(tok, tmp_path):
    from openformers.rl import DPOConfig, DPOTrainer

    def make(out, **kw):
        return DPOTrainer(tiny_word_llama(), args=_args(DPOConfig, out, max_steps=4, per_device_train_batch_size=4,
                                                        learning_rate=5e-3, **kw),
                          train_dataset=_preferences(32, 0), processing_class=tok)

    _resume_check(make, tmp_path)


def test_grpo_resumes_to_the_same_losses(tok, tmp_path):
    from openformers.rl import GRPOTrainer

    data = [{"prompt": f"say {w} :"} for w in WORDS[13:29]]

    def make(out, **kw):
        return GRPOTrainer(tiny_word_llama(), reward_funcs=_target_share,
                           args=_grpo_args(out, max_steps=4, per_device_train_batch_size=8, num_generations=4, **kw),
                           train_dataset=data, processing_class=tok)

    _resume_check(make, tmp_path)
