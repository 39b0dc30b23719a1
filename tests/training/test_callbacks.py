"""Callback events fire in the Hugging Face order, and weight decay skips biases and norms."""
from __future__ import annotations

import pytest
import torch

from openformers import Trainer, TrainerCallback, TrainingArguments
from openformers.training.optim import decay_parameter_names
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2


class Recorder(TrainerCallback):
    def __init__(self):
        self.events = []

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda args, state, control, **kw: self.events.append((name, state.global_step))
        raise AttributeError(name)


def test_event_order(tmp_path):
    rec = Recorder()
    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             logging_steps=1, eval_strategy="steps", eval_steps=2, save_steps=2, report_to="none", disable_tqdm=True)
    data = ragged_lm_data(16)
    Trainer(model=tiny_gpt2(), args=args, train_dataset=data, eval_dataset=data[:4], data_collator=pad_collator, callbacks=[rec]).train()
    names = [e for e, _ in rec.events if e != "on_prediction_step"]
    assert names[:3] == ["on_init_end", "on_train_begin", "on_epoch_begin"]
    first_step = names[3:names.index("on_step_end") + 1]
    assert first_step == ["on_step_begin", "on_substep_end", "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end"]
    assert ("on_evaluate", 2) in rec.events and ("on_save", 2) in rec.events and names[-1] == "on_train_end"
    assert names.index("on_evaluate") < names.index("on_save")


def test_weight_decay_skips_biases_and_norms():
    model = tiny_gpt2()
    decay = decay_parameter_names(model)
    assert "transformer.h.0.attn.c_attn.weight" in decay
    assert not any(n.endswith("bias") for n in decay)
    assert not any(".ln_" in n for n in decay)


def test_gradient_checkpointing_and_bf16_train(tmp_path):
    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, gradient_checkpointing=True, bf16=True,
                             logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
    model = tiny_gpt2()
    trainer = Trainer(model=model, args=args, train_dataset=ragged_lm_data(8), data_collator=pad_collator)
    trainer.train()
    assert model.is_gradient_checkpointing
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_trainer_accepts_hugging_face_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = ragged_lm_data(8)
    ds = datasets.Dataset.from_list([{**r, "text": "unused column"} for r in rows])
    args = TrainingArguments(str(tmp_path), max_steps=1, per_device_train_batch_size=4, save_strategy="no", report_to="none",
                             disable_tqdm=True)
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=ds, data_collator=pad_collator)
    assert trainer.train().global_step == 1
