"""Reporting: real TensorBoard event files, a real wandb offline run, local push_to_hub, optuna."""
from __future__ import annotations

import pytest
import torch

from openformers import Trainer, TrainingArguments
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2, train_tiny_with_eval


def test_tensorboard_event_files_are_readable(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = train_tiny_with_eval(tmp_path, report_to="tensorboard", logging_dir=str(tmp_path / "tb"))
    files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert files, "no event file written"
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags and "eval/loss" in tags and "train/learning_rate" in tags
    losses = [e.value for e in acc.Scalars("train/loss")]
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses == pytest.approx(logged, rel=1e-6)
    assert [e.step for e in acc.Scalars("eval/loss")] == [2, 4]


def test_wandb_offline_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "openformers-test")
    monkeypatch.setenv("WANDB_LOG_MODEL", "end")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train_tiny_with_eval(tmp_path, report_to="wandb", run_name="tiny-run")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_files = list(runs[0].glob("*.wandb"))
    assert run_files and run_files[0].stat().st_size > 0
    # the run file is wandb's record log of protobuf messages; the logged keys and the model
    # artifact appear in it verbatim. wandb's service process may still be flushing the last
    # records when finish() returns on a busy machine, so read again for a little while.
    import time

    wanted = (b"train/loss", b"eval/loss", b"train/global_step", b"tiny-run", b"model-")
    deadline = time.time() + 30
    while True:
        blob = run_files[0].read_bytes()
        missing = [k for k in wanted if k not in blob]
        if not missing or time.time() > deadline:
            break
        time.sleep(0.5)
    # b"model-": the final model, uploaded as an artifact (WANDB_LOG_MODEL=end)
    assert not missing, missing


def test_unknown_or_missing_reporter_is_clear(tmp_path):
    with pytest.raises(ValueError, match="report_to='nope'"):
        Trainer(model=tiny_gpt2(), args=TrainingArguments(str(tmp_path), report_to="nope"))


def test_push_to_hub_writes_local_cache_layout(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("OPENFORMERS_HUB", str(hub))
    trainer = train_tiny_with_eval(tmp_path, report_to="none", push_to_hub=True, hub_model_id="my-org/tiny-gpt2")
    trainer.push_to_hub()
    repo = hub / "models--my-org--tiny-gpt2"
    revision = (repo / "refs" / "main").read_text()
    snapshot = repo / "snapshots" / revision
    card = (snapshot / "README.md").read_text()
    assert "model-index" in card and "Validation Loss" in card and "learning_rate" in card
    from openformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained("my-org/tiny-gpt2", local_files_only=True)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_hyperparameter_search_with_optuna(tmp_path):
    pytest.importorskip("optuna")
    data = ragged_lm_data(8)
    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, save_strategy="no", report_to="none",
                             disable_tqdm=True)
    trainer = Trainer(model_init=lambda: tiny_gpt2(), args=args, train_dataset=data, eval_dataset=data, data_collator=pad_collator)
    best = trainer.hyperparameter_search(hp_space=lambda t: {"learning_rate": t.suggest_float("learning_rate", 1e-4, 1e-2, log=True)},
                                         n_trials=2, direction="minimize")
    assert 1e-4 <= best.hyperparameters["learning_rate"] <= 1e-2 and best.objective > 0
