"""Collators against transformers' collators on the same features."""
from __future__ import annotations

import pytest
import torch

from openformers.core.hub import embedded_model_path
from openformers.data import collators as ours

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def toks():
    path = embedded_model_path("minilm")
    from openformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)


def _features(tok, with_labels="label"):
    texts = ["a short one", "a much longer sentence with several more words", "mid sized text"]
    feats = [dict(tok(t)) for t in texts]
    for i, f in enumerate(feats):
        if with_labels == "label":
            f["label"] = i % 2
        elif with_labels == "tokens":
            f["labels"] = list(range(len(f["input_ids"])))
        f["text"] = texts[i]  # strings must be ignored or rejected the same way
    return feats


def _equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k


def test_with_padding_matches(toks):
    mine, ref = toks
    for kw in ({}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 16}):
        f1 = [{k: v for k, v in f.items() if k != "text"} for f in _features(mine)]
        f2 = [{k: v for k, v in f.items() if k != "text"} for f in _features(ref)]
        _equal(ours.DataCollatorWithPadding(mine, **kw)(f1), transformers.DataCollatorWithPadding(ref, **kw)(f2))


def test_default_collator_matches():
    feats = [{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "label": 1, "text": "x"},
             {"input_ids": [4, 5, 6], "attention_mask": [1, 1, 0], "label": 0, "text": "y"}]
    _equal(ours.default_data_collator(feats), transformers.default_data_collator([dict(f) for f in feats]))
    float_feats = [{"input_ids": [1], "label": 0.5}, {"input_ids": [2], "label": 1.5}]
    out = ours.default_data_collator(float_feats)
    assert out["labels"].dtype == torch.float32
    assert ours.default_data_collator([{"x": [1], "label": 3}])["labels"].dtype == torch.long


@pytest.mark.parametrize("side", ["right", "left"])
def test_token_classification_matches(toks, side):
    mine, ref = toks
    mine.padding_side = ref.padding_side = side
    try:
        f1 = [{k: v for k, v in f.items() if k != "text"} for f in _features(mine, "tokens")]
        f2 = [{k: v for k, v in f.items() if k != "text"} for f in _features(ref, "tokens")]
        _equal(ours.DataCollatorForTokenClassification(mine)(f1), transformers.DataCollatorForTokenClassification(ref)(f2))
    finally:
        mine.padding_side = ref.padding_side = "right"


def test_seq2seq_pads_labels_separately(toks):
    mine, ref = toks
    f1 = [{"input_ids": [101, 7, 102], "labels": [5, 6]}, {"input_ids": [101, 102], "labels": [5, 6, 7, 8]}]
    f2 = [dict(f) for f in f1]
    _equal(ours.DataCollatorForSeq2Seq(mine)(f1), transformers.DataCollatorForSeq2Seq(ref)(f2))


def test_causal_lm_labels_mask_padding(toks):
    mine, ref = toks
    f1 = [{k: v for k, v in f.items() if k not in ("text", "label")} for f in _features(mine)]
    f2 = [{k: v for k, v in f.items() if k not in ("text", "label")} for f in _features(ref)]
    a = ours.DataCollatorForLanguageModeling(mine, mlm=False)(f1)
    b = transformers.DataCollatorForLanguageModeling(ref, mlm=False)(f2)
    _equal(a, b)
    assert (a["labels"] == -100).sum() == (a["attention_mask"] == 0).sum()


def test_mlm_masking_statistics_and_seed(toks):
    mine, _ = toks
    feats = [{"input_ids": mine("word " * 200)["input_ids"]} for _ in range(20)]
    coll = ours.DataCollatorForLanguageModeling(mine, mlm_probability=0.15, seed=3)
    out = coll([dict(f) for f in feats])
    original = torch.tensor([f["input_ids"] for f in feats])
    chosen = out["labels"] != -100
    # special tokens are never chosen; about 15% of the rest are
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    rate = chosen.float().mean().item()
    assert 0.12 < rate < 0.18, rate
    assert torch.equal(out["labels"][chosen], original[chosen])
    masked_share = (out["input_ids"][chosen] == mine.mask_token_id).float().mean().item()
    assert 0.74 < masked_share < 0.86, masked_share
    assert torch.equal(out["input_ids"][~chosen], original[~chosen])
    again = ours.DataCollatorForLanguageModeling(mine, mlm_probability=0.15, seed=3)([dict(f) for f in feats])
    assert torch.equal(again["input_ids"], out["input_ids"])


def test_mlm_needs_mask_token():
    class NoMask:
        mask_token = None

    with pytest.raises(ValueError, match="mask token"):
        ours.DataCollatorForLanguageModeling(NoMask())


def test_collators_take_a_dict_of_lists():
    import transformers

    import openformers as of
    from openformers.data.collators import DataCollatorForLanguageModeling, DataCollatorForTokenClassification

    path = of.embedded_model_path("minilm")
    tok, ref_tok = of.AutoTokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(str(path))
    texts = ["a short one", "a much longer sentence here"]
    ours = of.DataCollatorWithPadding(tok)(dict(tok(texts)))
    theirs = transformers.DataCollatorWithPadding(ref_tok)(dict(ref_tok(texts)))
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key].tolist() == theirs[key].tolist()
    assert of.DataCollatorWithPadding(tok)(tok(texts))["input_ids"].shape == theirs["input_ids"].shape
    lm = DataCollatorForLanguageModeling(tok, mlm=False)(dict(tok(texts)))
    assert lm["labels"].shape == theirs["input_ids"].shape
    columns = dict(tok(texts))
    columns["labels"] = [[0] * len(ids) for ids in columns["input_ids"]]
    tc = DataCollatorForTokenClassification(tok)(columns)
    assert tc["labels"].shape == theirs["input_ids"].shape
    with pytest.raises(ValueError, match="same length"):
        of.DataCollatorWithPadding(tok)({"input_ids": [[1, 2]], "attention_mask": [[1, 1], [1]]})
