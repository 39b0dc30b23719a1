"""Trainer: exact gradient accumulation, exact resume, crash safety, evaluation, reporting."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openformers import EarlyStoppingCallback, Trainer, TrainingArguments
from openformers.training.checkpointing import checkpoint_dirs
from tests.training.helpers import pad_collator, params, ragged_lm_data, tiny_gpt2

HERE = Path(__file__).parent


def _one_update(tmp_path: Path, batch: int, accum: int) -> tuple[dict[str, torch.Tensor], float]:
    model = tiny_gpt2()
    args = TrainingArguments(str(tmp_path / f"b{batch}a{accum}"), max_steps=1, per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accum, optim="sgd", learning_rate=1.0, max_grad_norm=0.0,
                             lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=ragged_lm_data(16), data_collator=pad_collator)
    before = params(model)
    trainer.train()
    after = params(model)
    grads = {k: before[k] - after[k] for k in before}  # lr 1 SGD: the step is the gradient
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return grads, loss


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    reference, ref_loss = _one_update(tmp_path, 16, 1)
    assert any(g.abs().max() > 0 for g in reference.values())
    for batch, accum in ((4, 4), (1, 16)):
        grads, loss = _one_update(tmp_path, batch, accum)
        for k in reference:
            torch.testing.assert_close(grads[k], reference[k], atol=1e-5, rtol=0, msg=f"{k} with {batch}x{accum}")
        assert loss == pytest.approx(ref_loss, abs=1e-5)


def test_logged_loss_is_token_mean(tmp_path):
    # the logged loss of a full-batch step equals the token-mean loss computed directly
    model = tiny_gpt2()
    batch = pad_collator(ragged_lm_data(16))
    with torch.no_grad():
        direct = model(**batch).loss.item()
    _, logged = _one_update(tmp_path, 4, 4)
    assert logged == pytest.approx(direct, abs=1e-5)


def _run(out: Path, mode: str, kill: int = -1) -> subprocess.CompletedProcess:
    # a 10-step run takes ~25 s alone; on a machine loaded ten times over its cores it took minutes
    try:
        return subprocess.run([sys.executable, str(HERE / "run_resume.py"), str(out), mode, str(kill)],
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run_resume.py {mode} did not finish in 900 s (load average {Path('/proc/loadavg').read_text().split()[:3]})")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    proc = _run(out, "full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(out / "final.safetensors"), json.loads((out / "history.json").read_text()), out


def _strip(history):
    return [h for h in history if "train_runtime" not in h and "train_loss" not in h]


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _parting(reference: dict, other: dict | None, what: str) -> str | None:
    """Where ``other``'s per-step parameter digests first differ from ``reference``'s (run_resume.py writes them)."""
    for step in sorted(other or {}, key=int):
        if step in reference and other[step] != reference[step]:
            names = [n for n in reference[step] if other[step].get(n) != reference[step][n]]
            return f"{what} first differs after step {step}, in {len(names)} tensors ({names[0]}, ...)"
    return None


def _resume_report(full_dir: Path, resumed_dir: Path, crash_mode: str, weights, final) -> str:
    """What differs between the uninterrupted and the resumed run, and from which step and process."""
    differing = [k for k in weights if not torch.equal(final[k], weights[k])]
    lines = []
    if differing:
        k = differing[0]
        lines.append(f"{len(differing)}/{len(weights)} final tensors differ; first {k}: max abs diff "
                     f"{(final[k] - weights[k]).abs().max().item():.3g}")
    full_steps = _read(full_dir / "steps-full.json") or {}
    for mode, what in ((crash_mode, "the crashed run (before its checkpoint)"), ("resume", "the resumed run")):
        where = _parting(full_steps, _read(resumed_dir / f"steps-{mode}.json"), what)
        lines.append(where or f"{what}: every recorded step equals the uninterrupted run's")
    history, resumed = _strip(_read(full_dir / "history.json") or []), _strip(_read(resumed_dir / "history.json") or [])
    for a, b in zip(history, resumed):
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            lines.append(f"log history first differs at step {a.get('step')}: " + ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys))
            break
    envs = {m: _read(d / f"env-{m}.json") for m, d in (("full", full_dir), (crash_mode, resumed_dir), ("resume", resumed_dir))}
    if len({json.dumps(e, sort_keys=True) for e in envs.values()}) > 1:
        lines.append(f"the processes ran with different settings: {envs}")
    return "; ".join(lines)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, uninterrupted):
    weights, history, full_dir = uninterrupted
    crashed = _run(tmp_path, "crash", 4)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert [d.name for d in checkpoint_dirs(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    resumed = _run(tmp_path, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_file(tmp_path / "final.safetensors")
    same = all(torch.equal(final[k], weights[k]) for k in weights)
    same_history = _strip(json.loads((tmp_path / "history.json").read_text())) == _strip(history)
    assert same and same_history, _resume_report(full_dir, tmp_path, "crash", weights, final)


def test_crash_while_saving_resumes_from_previous_checkpoint(tmp_path, uninterrupted):
    weights, _, full_dir = uninterrupted
    crashed = _run(tmp_path, "crash_mid_save", 6)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert (tmp_path / "tmp-checkpoint-6").is_dir()  # the half-written one is there...
    assert checkpoint_dirs(tmp_path)[-1].name == "checkpoint-4"  # ...but is not taken as complete
    resumed = _run(tmp_path, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_file(tmp_path / "final.safetensors")
    assert all(torch.equal(final[k], weights[k]) for k in weights), \
        _resume_report(full_dir, tmp_path, "crash_mid_save", weights, final)
    assert not (tmp_path / "tmp-checkpoint-6").exists()


def _classification_data(n: int = 32):
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        label = i % 2
        ids = torch.randint(1, 32, (6,), generator=g) + 32 * label  # label-dependent vocabulary: learnable
        rows.append({"input_ids": ids.tolist(), "attention_mask": [1] * 6, "label": label})
    return rows


def _classifier():
    from openformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=32, num_labels=2))


def _accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def test_best_checkpoint_survives_rotation_and_is_loaded(tmp_path):
    data = _classification_data()
    args = TrainingArguments(str(tmp_path), max_steps=12, per_device_train_batch_size=8, learning_rate=5e-3, eval_strategy="steps",
                             eval_steps=2, save_steps=2, save_total_limit=1, load_best_model_at_end=True,
                             metric_for_best_model="accuracy", report_to="none", disable_tqdm=True, logging_steps=2)
    trainer = Trainer(model=_classifier(), args=args, train_dataset=data, eval_dataset=data, compute_metrics=_accuracy)
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and Path(best).is_dir()
    names = {d.name for d in checkpoint_dirs(tmp_path)}
    assert Path(best).name in names and "checkpoint-12" in names and len(names) <= 2
    assert trainer.evaluate()["eval_accuracy"] == pytest.approx(trainer.state.best_metric)


def test_early_stopping_stops(tmp_path):
    data = _classification_data()
    args = TrainingArguments(str(tmp_path), max_steps=200, per_device_train_batch_size=8, learning_rate=0.0, eval_strategy="steps",
                             eval_steps=1, save_strategy="steps", save_steps=1, save_total_limit=2, metric_for_best_model="loss",
                             load_best_model_at_end=True, report_to="none", disable_tqdm=True)
    trainer = Trainer(model=_classifier(), args=args, train_dataset=data, eval_dataset=data,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    assert trainer.state.global_step == 3  # lr 0: never improves after the first evaluation


def test_evaluate_and_predict_stream_logits(tmp_path):
    data = _classification_data(20)
    args = TrainingArguments(str(tmp_path), per_device_eval_batch_size=6, report_to="none", disable_tqdm=True)
    seen = []

    def preprocess(logits, labels):
        seen.append(logits.shape[0])
        return logits.argmax(-1)

    trainer = Trainer(model=_classifier(), args=args, eval_dataset=data, preprocess_logits_for_metrics=preprocess,
                      compute_metrics=lambda p: {"acc": float((p.predictions == p.label_ids).mean())})
    metrics = trainer.evaluate()
    assert seen == [6, 6, 6, 2] and 0 <= metrics["eval_acc"] <= 1 and "eval_loss" in metrics
    out = trainer.predict(data)
    assert out.predictions.shape == (20,) and out.label_ids.shape == (20,)
    assert set(out.metrics) >= {"test_loss", "test_acc"}


def test_resume_true_without_checkpoint_is_clear(tmp_path):
    args = TrainingArguments(str(tmp_path), max_steps=1, report_to="none", disable_tqdm=True)
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=ragged_lm_data(4), data_collator=pad_collator)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        trainer.train(resume_from_checkpoint=True)


def test_jsonl_log_always_written(tmp_path):
    args = TrainingArguments(str(tmp_path), max_steps=3, logging_steps=1, per_device_train_batch_size=4, save_strategy="no",
                             report_to="none", disable_tqdm=True)
    Trainer(model=tiny_gpt2(), args=args, train_dataset=ragged_lm_data(12), data_collator=pad_collator).train()
    lines = [json.loads(line) for line in (tmp_path / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3]


def test_evaluating_mid_training_keeps_resume_exact(tmp_path):
    """Evaluation leaves the weights' storage alone (inference never changes a parameter), so a run
    resumed from a checkpoint ends bitwise equal to the uninterrupted run that evaluated before that point."""
    import shutil

    from openformers import LlamaConfig, LlamaForCausalLM

    def make():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0))

    def trainer(out, model):
        args = TrainingArguments(str(out), max_steps=6, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2,
                                 save_strategy="steps", save_steps=3, report_to="none", disable_tqdm=True,
                                 learning_rate=1e-2)
        return Trainer(model=model, args=args, train_dataset=ragged_lm_data(32), eval_dataset=ragged_lm_data(8, seed=1),
                       data_collator=pad_collator)

    full = trainer(tmp_path / "a", make())
    full.train()
    strides = {n: p.stride() for n, p in full.model.named_parameters()}
    assert strides == {n: p.stride() for n, p in make().named_parameters()}  # evaluation left the storage alone
    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    resumed = trainer(tmp_path / "b", make())
    resumed.train(resume_from_checkpoint=True)
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
