"""The encoder runtime's training forward (``runtime/encoder.py``, ``train_pad_free``): a sequence-classification
head's training call on a padded batch runs the per-token work on the real tokens only. Its loss, logits and every
parameter gradient are the module path's and transformers' (dropout off, and dropout on too: the dropouts draw the
padded tensors' masks), it changes no parameter, and it steps aside where it does not apply."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest
import torch

import openformers as of
from openformers.runtime import describe, encoder
from tests.models.parity import assert_close, build_reference

VOCAB = 99
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=66)
DISTIL = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=66)
FAMILIES = {"bert": ("Bert", TINY, 0), "roberta": ("Roberta", TINY, 1), "distilbert": ("DistilBert", DISTIL, 0)}
DROPOUT_OFF = {"bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
               "roberta": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
               "distilbert": dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)}
DROPOUT_ON = {"bert": dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2),
              "roberta": dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2),
              "distilbert": dict(dropout=0.2, attention_dropout=0.2, seq_classif_dropout=0.2)}


def model_of(family: str, head: str = "ForSequenceClassification", **config_kw) -> torch.nn.Module:
    prefix, tiny, _ = FAMILIES[family]
    module = importlib.import_module(f"openformers.models.{family}")
    torch.manual_seed(0)
    config = getattr(module, f"{prefix}Config")(num_labels=3, **{**tiny, **config_kw})
    return getattr(module, prefix + head)(config).train()


def padded(pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """4 x 40 positions: rows of 40, 20, 5 and 31 real tokens (about 40% padding)."""
    ids = torch.randint(3, VOCAB, (4, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 20:], mask[2, 5:], mask[3, 31:] = 0, 0, 0
    if left:
        mask = mask.flip(1)
    ids[mask == 0] = pad_id
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 2])}


class Count:
    """How many calls ran ``train_pad_free``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = encoder.train_pad_free

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(encoder, "train_pad_free", counted)


def step(model: torch.nn.Module, inputs: dict, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(**inputs)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), out.logits.detach(), grads, torch.get_rng_state()


def padded_step(model: torch.nn.Module, inputs: dict, monkeypatch: pytest.MonkeyPatch) -> tuple:
    with monkeypatch.context() as m:
        m.setattr(encoder._Rows, "worth_it", classmethod(lambda cls, mask: None))
        return step(model, inputs)


def compare(got: tuple, expected: tuple, atol: float, what: str) -> None:
    loss, logits, grads, _ = got
    ref_loss, ref_logits, ref_grads, _ = expected
    assert_close(loss, ref_loss, atol=atol, what=f"{what} loss")
    assert_close(logits, ref_logits, atol=atol, what=f"{what} logits")
    assert set(grads) == set(ref_grads), what
    for name, grad in ref_grads.items():
        assert_close(grads[name], grad, atol=atol * 10, what=f"{what} {name}")


@pytest.mark.parametrize("dropout", ["off", "on"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pad_free_training_matches_the_module_path(family: str, dropout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = model_of(family, **(DROPOUT_ON if dropout == "on" else DROPOUT_OFF)[family])
    inputs = padded(FAMILIES[family][2])
    count = Count(monkeypatch)
    got = step(model, inputs)
    assert count.calls == 1
    expected = padded_step(model, inputs, monkeypatch)
    assert count.calls == 1
    assert torch.equal(got[3], expected[3])  # the same random draws
    compare(got, expected, 1e-6, f"{family} dropout {dropout}")
    if dropout == "on":  # the dropouts did something: another seed gives another loss
        model.zero_grad()
        torch.manual_seed(4)
        assert (model(**inputs).loss.detach() - got[0]).abs() > 1e-6


@pytest.mark.parametrize("dropout", ["off", "on"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pad_free_training_matches_transformers(family: str, dropout: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    prefix, tiny, pad_id = FAMILIES[family]
    ref = build_reference(f"{prefix}ForSequenceClassification", f"{prefix}Config", tmp_path, attn_implementation="sdpa",
                          num_labels=3, **tiny, **(DROPOUT_ON if dropout == "on" else DROPOUT_OFF)[family])
    module = importlib.import_module(f"openformers.models.{family}")
    ours = getattr(module, f"{prefix}ForSequenceClassification").from_pretrained(tmp_path, attn_implementation="sdpa")
    ours.train(), ref.train()
    inputs = padded(pad_id)
    count = Count(monkeypatch)
    got = step(ours, inputs)
    assert count.calls == 1
    expected = step(ref, inputs)
    assert torch.equal(got[3], expected[3])  # the same random draws (dropout on: the same masks)
    compare(got, expected, 1e-5, f"{family} dropout {dropout} against transformers")


def test_bf16_autocast_matches_the_module_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = model_of("bert", **DROPOUT_OFF["bert"])
    inputs = padded(0)
    count = Count(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = step(model, inputs)
        expected = padded_step(model, inputs, monkeypatch)
    assert count.calls == 1
    compare(got, expected, 2e-2, "bf16 autocast")


def test_it_changes_no_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    model = model_of("bert", **DROPOUT_ON["bert"])
    before = {n: (p.data_ptr(), p.stride(), p.detach().clone()) for n, p in model.named_parameters()}
    count = Count(monkeypatch)
    step(model, padded(0))
    assert count.calls == 1
    for n, p in model.named_parameters():
        ptr, stride, value = before[n]
        assert p.data_ptr() == ptr and p.stride() == stride and torch.equal(p.detach(), value), n


def test_calls_it_does_not_cover_run_the_module_path(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from openformers.peft import LoraConfig, get_peft_model

    monkeypatch.setattr(describe, "_LOGGED", set())  # every reason logs again
    count = Count(monkeypatch)
    inputs = padded(0)

    def served(model: torch.nn.Module, **extra) -> bool:
        before = count.calls
        torch.manual_seed(0)
        out = model(**inputs, **extra)
        (out.loss if out.loss is not None else out.logits.sum()).backward()
        return count.calls > before

    model = model_of("bert")
    assert served(model)
    caplog.set_level(logging.DEBUG, logger="openformers.runtime.encoder")
    assert not served(model, output_hidden_states=True)
    assert not served(model, output_attentions=True)
    model.eval()
    assert not served(model)  # evaluation mode with autograd recording: the module path
    model.train()
    with torch.no_grad():
        model(**inputs)  # no gradient: the inference plan, not the training forward
    assert count.calls == 1
    handle = model.bert.encoder.layer[1].intermediate.register_forward_hook(lambda *a: None)
    assert not served(model)
    handle.remove()
    model.gradient_checkpointing_enable()
    assert not served(model)
    model.gradient_checkpointing_disable()
    assert served(model)
    assert not served(model_of("bert", attn_implementation="eager"))
    original = model.bert.forward
    model.bert.forward = lambda *a, **kw: original(*a, **kw)  # a wrapper set on the instance runs (core/modeling.py)
    assert not served(model)
    del model.bert.forward
    assert served(model)
    # a padded first position (left padding)
    left = padded(0, left=True)
    before = count.calls
    torch.manual_seed(0)
    model(**left).loss.backward()
    assert count.calls == before
    # heads whose outputs hold every position (their logits at padding are the module path's to give)
    token_labels = inputs["labels"][:, None].expand(-1, 40).masked_fill(inputs["attention_mask"] == 0, -100)
    sequence_inputs, inputs = inputs, {**inputs, "labels": token_labels}
    assert not served(model_of("bert", "ForTokenClassification"))
    assert not served(model_of("bert", "ForMaskedLM"))
    inputs = sequence_inputs
    # the bare model: its caller reads every position
    bare = model_of("bert", "Model")
    before = count.calls
    bare(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state.sum().backward()
    assert count.calls == before
    # an adapter: LoRA layers are not plain linear layers
    peft = get_peft_model(model_of("bert"), LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                       task_type="SEQ_CLS"))
    peft.train()
    before = count.calls
    torch.manual_seed(0)
    peft(**inputs).loss.backward()
    assert count.calls == before
    reasons = caplog.text
    for reason in ("gradient checkpointing", "output_hidden_states", "output_attentions", "attn_implementation",
                   "reads every position", "not a plain module"):
        assert reason in reasons, reason


def test_no_padding_runs_the_module_path(monkeypatch: pytest.MonkeyPatch) -> None:
    count = Count(monkeypatch)
    model = model_of("bert")
    inputs = padded(0)
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    model(**inputs).loss.backward()
    assert count.calls == 0


def _classification_rows(n: int = 48) -> list[dict]:
    """Ragged rows (4 to 20 tokens) whose label is the vocabulary half they draw from: learnable."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        label = i % 2
        length = int(torch.randint(4, 21, (1,), generator=g))
        ids = torch.randint(1, 32, (length,), generator=g) + 32 * label
        rows.append({"input_ids": ids.tolist(), "attention_mask": [1] * length, "labels": label})
    return rows


def _collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, :len(r["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in rows])}


def _classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return of.BertForSequenceClassification(of.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, num_labels=2,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))


def _trainer(out: Path, max_steps: int, **kw) -> "of.Trainer":
    args = of.TrainingArguments(str(out), max_steps=max_steps, per_device_train_batch_size=8, learning_rate=1e-2,
                                save_strategy="steps", save_steps=4, report_to="none", disable_tqdm=True,
                                logging_steps=1, seed=0, **kw)
    return of.Trainer(model=_classifier(), args=args, train_dataset=_classification_rows(), data_collator=_collate)


def test_trainer_converges_and_resumes_exactly_with_dropout_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    count = Count(monkeypatch)
    full = _trainer(tmp_path / "a", 18)
    full.train()
    assert count.calls >= 18  # every step ran the real tokens alone
    losses = [r["loss"] for r in full.state.log_history if "loss" in r]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    shutil.copytree(tmp_path / "a" / "checkpoint-4", tmp_path / "b" / "checkpoint-4")
    resumed = _trainer(tmp_path / "b", 18)
    resumed.train(resume_from_checkpoint=True)
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    # and the same run on the module path ends on the same weights (the same random draws, fp32 rounding apart)
    with monkeypatch.context() as m:
        m.setattr(encoder._Rows, "worth_it", classmethod(lambda cls, mask: None))
        padded_run = _trainer(tmp_path / "c", 18)
        padded_run.train()
    for (name, p), q in zip(full.model.named_parameters(), padded_run.model.parameters()):
        assert_close(p.detach(), q.detach(), atol=1e-4, what=name)
