"""RoBERTa and XLM-RoBERTa: parity with transformers, padding-aware positions, heads."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import openformers.models.roberta as orb
from openformers.models.bert.model import BertModel
from openformers.models.roberta.model import position_ids_from_input_ids
from tests.models.parity import assert_close, build_reference, random_batch
from tests.models.test_bert import HEADS, check_family_parity

transformers = pytest.importorskip("transformers")

VOCAB = 99
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=40)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("prefix", ["Roberta", "XLMRoberta"])
def test_parity(prefix: str, head: str, attn: str, tmp_path: Path) -> None:
    check_family_parity(orb, prefix, prefix + "Config", head, attn, tmp_path, TINY, pad_id=1, with_token_types=False)


def test_position_ids() -> None:
    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [1, 1, 0, 7, 2, 1]])
    assert position_ids_from_input_ids(ids, 1).tolist() == [[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 1]]
    assert position_ids_from_input_ids(ids[:, :1], 1, past_length=3).tolist() == [[5], [1]]


def test_left_padding_and_inputs_embeds(tmp_path: Path) -> None:
    ref = build_reference("RobertaModel", "RobertaConfig", tmp_path, **TINY)
    ours = orb.RobertaModel.from_pretrained(tmp_path)
    ids, mask = random_batch(VOCAB, batch=2, seq=8, pad_last=3, left=True)
    ids[mask == 0] = 1
    with torch.no_grad():
        assert_close(ours(ids, mask).last_hidden_state, ref(input_ids=ids, attention_mask=mask).last_hidden_state,
                     mask=mask, what="left padding")
        embeds = ref.get_input_embeddings()(ids[:1])
        assert_close(ours(inputs_embeds=embeds).last_hidden_state, ref(inputs_embeds=embeds).last_hidden_state, what="embeds")


def test_configs_and_reuse() -> None:
    c, x = orb.RobertaConfig(), orb.XLMRobertaConfig()
    assert (c.model_type, x.model_type) == ("roberta", "xlm-roberta")
    assert (c.pad_token_id, c.bos_token_id, c.eos_token_id, c.vocab_size) == (1, 0, 2, 50265)
    theirs = transformers.XLMRobertaConfig()
    assert (x.pad_token_id, x.vocab_size) == (theirs.pad_token_id, theirs.vocab_size)
    assert issubclass(orb.RobertaModel, BertModel) and issubclass(orb.XLMRobertaModel, orb.RobertaModel)
    model = orb.XLMRobertaForMaskedLM(orb.XLMRobertaConfig(**TINY))
    assert model.config.model_type == "xlm-roberta"
    assert model.lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight


def test_mlm_save_keys_and_transformers_reads_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = orb.RobertaForMaskedLM(orb.RobertaConfig(**TINY)).eval()
    with torch.no_grad():
        model.lm_head.decoder.bias.normal_()
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.bias" in keys and "lm_head.decoder.bias" not in keys and "lm_head.decoder.weight" not in keys
    theirs = transformers.RobertaForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask = random_batch(VOCAB)
    ids[mask == 0] = 1
    with torch.no_grad():
        assert_close(model(ids, mask).logits, theirs(input_ids=ids, attention_mask=mask).logits, mask=mask)


@pytest.mark.parametrize("problem", ["regression", "single_label_classification", "multi_label_classification"])
def test_classification_losses(problem: str, tmp_path: Path) -> None:
    n = 1 if problem == "regression" else 3
    ref = build_reference("XLMRobertaForSequenceClassification", "XLMRobertaConfig", tmp_path, num_labels=n,
                          problem_type=problem, **TINY)
    ours = orb.XLMRobertaForSequenceClassification.from_pretrained(tmp_path)
    ids, mask = random_batch(VOCAB, batch=3)
    labels = {"regression": torch.randn(3), "single_label_classification": torch.tensor([0, 2, 1]),
              "multi_label_classification": torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]])}[problem]
    with torch.no_grad():
        assert_close(ours(ids, mask, labels=labels).loss, ref(input_ids=ids, attention_mask=mask, labels=labels).loss)


def test_auto_classes(tmp_path: Path) -> None:
    import openformers

    build_reference("XLMRobertaForTokenClassification", "XLMRobertaConfig", tmp_path / "x", **TINY)
    assert type(openformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "x")) is orb.XLMRobertaForTokenClassification
    build_reference("RobertaForQuestionAnswering", "RobertaConfig", tmp_path / "r", **TINY)
    assert type(openformers.AutoModel.from_pretrained(tmp_path / "r")) is orb.RobertaModel


def test_gradient_checkpointing() -> None:
    torch.manual_seed(0)
    model = orb.RobertaForSequenceClassification(orb.RobertaConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **TINY)).train()
    ids, mask = random_batch(VOCAB)
    model(ids, mask, labels=torch.tensor([0, 1])).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(ids, mask, labels=torch.tensor([0, 1])).loss.backward()
    for n, p in model.named_parameters():
        if n in plain:
            assert_close(p.grad, plain[n], atol=1e-6, what=n)
