"""TrainingArguments: names, defaults, legacy spellings and contradictions."""
from __future__ import annotations

import pytest

from openformers import TrainingArguments
from openformers.training.schedulers import get_scheduler


def test_defaults_match_the_reference():
    transformers = pytest.importorskip("transformers")
    ours, theirs = TrainingArguments("o"), transformers.TrainingArguments("o")
    for name in ("num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                 "max_grad_norm", "logging_steps", "save_steps", "seed", "logging_first_step", "save_total_limit",
                 "dataloader_num_workers", "remove_unused_columns", "load_best_model_at_end", "fp16", "bf16"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.lr_scheduler_type == str(theirs.lr_scheduler_type).split(".")[-1].lower().replace("schedulertype.", "")
    assert ours.optim == "adamw_torch"


def test_legacy_names_are_accepted():
    args = TrainingArguments("o", evaluation_strategy="epoch", save_strategy="epoch", warmup_ratio=0.1, logging_dir="./logs",
                             no_cuda=True)
    assert args.eval_strategy == "epoch" and args.evaluation_strategy == "epoch"
    assert args.warmup_ratio == 0.1 and args.get_warmup_steps(100) == 10
    assert args.logging_dir == "./logs" and args.use_cpu
    # transformers 5 spells a ratio as a float warmup_steps below 1
    assert TrainingArguments("o", warmup_steps=0.2).get_warmup_steps(50) == 10
    assert TrainingArguments("o", warmup_steps=7).get_warmup_steps(50) == 7


@pytest.mark.parametrize("kwargs, message", [
    (dict(load_best_model_at_end=True, eval_strategy="steps", save_strategy="epoch"), "save_strategy"),
    (dict(load_best_model_at_end=True), "needs evaluation"),
    (dict(load_best_model_at_end=True, eval_strategy="steps", eval_steps=3, save_steps=10), "multiple of eval_steps"),
    (dict(fp16=True, bf16=True), "choose one"),
    (dict(eval_strategy="sometimes"), "eval_strategy"),
    (dict(lr_scheduler_type="triangle"), "lr_scheduler_type"),
    (dict(optim="lion_magic"), "optim"),
    (dict(per_device_train_batch_size=0), "per_device_train_batch_size"),
    (dict(evaluation_strategy="epoch", eval_strategy="steps"), "use only eval_strategy"),
    (dict(warmup_ratio=1.5), "warmup_ratio"),
])
def test_contradictions_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingArguments("o", **kwargs)


def test_unknown_argument_is_named():
    with pytest.raises(TypeError, match="learning_rat"):
        TrainingArguments("o", learning_rat=1e-3)


def test_best_model_defaults():
    args = TrainingArguments("o", load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch")
    assert args.metric_for_best_model == "loss" and args.greater_is_better is False
    args = TrainingArguments("o", metric_for_best_model="accuracy")
    assert args.greater_is_better is True


def test_grouped_views():
    args = TrainingArguments("o", learning_rate=1e-3, weight_decay=0.1, bf16=True, save_total_limit=2, report_to=["tensorboard"])
    assert args.optimizer.learning_rate == 1e-3 and args.optimizer.weight_decay == 0.1
    assert args.precision.bf16 and args.checkpointing.total_limit == 2 and args.logging.report_to == ["tensorboard"]
    assert args.to_dict()["learning_rate"] == 1e-3


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"])
def test_schedules_match_the_reference(name):
    transformers = pytest.importorskip("transformers")
    import torch

    def lrs(factory):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.1)
        sched = factory(opt)
        out = []
        for _ in range(30):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    ours = lrs(lambda o: get_scheduler(name, o, num_warmup_steps=5, num_training_steps=25))
    theirs = lrs(lambda o: transformers.get_scheduler(name, o, num_warmup_steps=5, num_training_steps=25))
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_fsdp_outside_torchrun_is_refused_clearly(tmp_path):
    from openformers import Trainer
    from tests.training.helpers import tiny_gpt2

    args = TrainingArguments(str(tmp_path), fsdp="full_shard auto_wrap")
    assert args.fsdp == ["full_shard", "auto_wrap"]
    with pytest.raises(ValueError, match="launch the script with torchrun"):
        Trainer(model=tiny_gpt2(), args=args)
