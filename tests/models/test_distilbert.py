"""DistilBERT: parity with transformers, sinusoidal positions, heads and losses."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import openformers.models.distilbert as od
from tests.models.parity import assert_close, build_reference, random_batch
from tests.models.test_bert import HEADS, check_family_parity

transformers = pytest.importorskip("transformers")

VOCAB = 99
TINY = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("head", HEADS)
def test_parity(head: str, attn: str, tmp_path: Path) -> None:
    check_family_parity(od, "DistilBert", "DistilBertConfig", head, attn, tmp_path, TINY, with_token_types=False)


@pytest.mark.parametrize("activation", ["relu", "gelu_new"])
def test_sinusoidal_and_activation(activation: str, tmp_path: Path) -> None:
    cfg = dict(TINY, sinusoidal_pos_embds=True, activation=activation)
    check_family_parity(od, "DistilBert", "DistilBertConfig", "ForMaskedLM", "sdpa", tmp_path, cfg, with_token_types=False)
    ref = transformers.DistilBertModel(transformers.DistilBertConfig(**cfg))
    ours = od.DistilBertModel(od.DistilBertConfig(**cfg))
    assert_close(ours.embeddings.position_embeddings.weight, ref.embeddings.position_embeddings.weight, atol=1e-6)
    assert not ours.embeddings.position_embeddings.weight.requires_grad


def test_config_attribute_map(tmp_path: Path) -> None:
    c = od.DistilBertConfig(hidden_size=64, num_attention_heads=8, num_hidden_layers=3)
    assert (c.dim, c.n_heads, c.n_layers) == (64, 8, 3)
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers) == (64, 8, 3)
    c.save_pretrained(tmp_path)
    theirs = transformers.DistilBertConfig.from_pretrained(tmp_path)
    assert (theirs.dim, theirs.n_heads, theirs.n_layers) == (64, 8, 3)
    d, t = od.DistilBertConfig(), transformers.DistilBertConfig()
    for field in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "activation", "qa_dropout",
                  "seq_classif_dropout", "sinusoidal_pos_embds", "max_position_embeddings"):
        assert getattr(d, field) == getattr(t, field), field


@pytest.mark.parametrize("problem", ["regression", "single_label_classification", "multi_label_classification"])
def test_classification_losses(problem: str, tmp_path: Path) -> None:
    n = 1 if problem == "regression" else 3
    ref = build_reference("DistilBertForSequenceClassification", "DistilBertConfig", tmp_path, num_labels=n,
                          problem_type=problem, **TINY)
    ours = od.DistilBertForSequenceClassification.from_pretrained(tmp_path)
    ids, mask = random_batch(VOCAB, batch=3)
    labels = {"regression": torch.randn(3), "single_label_classification": torch.tensor([0, 2, 1]),
              "multi_label_classification": torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]])}[problem]
    with torch.no_grad():
        assert_close(ours(ids, mask, labels=labels).loss, ref(input_ids=ids, attention_mask=mask, labels=labels).loss)


def test_mlm_qa_losses_and_tying(tmp_path: Path) -> None:
    ids, mask = random_batch(VOCAB, batch=3)
    ref = build_reference("DistilBertForMaskedLM", "DistilBertConfig", tmp_path / "mlm", **TINY)
    ours = od.DistilBertForMaskedLM.from_pretrained(tmp_path / "mlm")
    assert ours.vocab_projector.weight is ours.distilbert.embeddings.word_embeddings.weight
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    with torch.no_grad():
        assert_close(ours(ids, mask, labels=labels).loss, ref(input_ids=ids, attention_mask=mask, labels=labels).loss)
    ref = build_reference("DistilBertForQuestionAnswering", "DistilBertConfig", tmp_path / "qa", **TINY)
    ours = od.DistilBertForQuestionAnswering.from_pretrained(tmp_path / "qa")
    pos = dict(start_positions=torch.tensor([0, 3, 50]), end_positions=torch.tensor([2, 4, 6]))
    with torch.no_grad():
        assert_close(ours(ids, mask, **pos).loss, ref(input_ids=ids, attention_mask=mask, **pos).loss)


def test_return_tuple_hidden_states_and_checkpointing() -> None:
    torch.manual_seed(0)
    model = od.DistilBertForTokenClassification(od.DistilBertConfig(dropout=0.0, attention_dropout=0.0, **TINY))
    ids, mask = random_batch(VOCAB)
    out = model(ids, mask, return_dict=False, output_hidden_states=True)
    assert len(out) == 2 and len(out[1]) == TINY["n_layers"] + 1
    model.train()
    labels = torch.randint(0, 2, ids.shape)
    model(ids, mask, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(ids, mask, labels=labels).loss.backward()
    for n, p in model.named_parameters():
        if n in plain:
            assert_close(p.grad, plain[n], atol=1e-6, what=n)


def test_auto_classes(tmp_path: Path) -> None:
    import openformers

    build_reference("DistilBertForSequenceClassification", "DistilBertConfig", tmp_path, **TINY)
    assert type(openformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)) is od.DistilBertForSequenceClassification
    assert type(openformers.AutoModel.from_pretrained(tmp_path)) is od.DistilBertModel
