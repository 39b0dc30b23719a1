"""token-classification (ner) parity with transformers' pipeline on a tiny random model."""
from __future__ import annotations

import pytest

from openformers import pipeline

from .helpers import assert_same, hf_pipeline

TEXTS = ["My name is Wolfgang and I live in Berlin.", "Hugging Face Inc. is a company based in New York City.",
         "unbelievably antidisestablishmentarianism", "Zürich, São Paulo & U.S.A. — ok?", "x"]
STRATEGIES = ["none", "simple", "first", "average", "max"]


@pytest.fixture(scope="module")
def pair(tiny_dirs):
    return pipeline("ner", model=str(tiny_dirs["ner"])), hf_pipeline("ner", model=str(tiny_dirs["ner"]))


def _hf_words_from_text(results, text):
    """transformers joins tokens back into a word; we cut the word from the original text."""
    out = []
    for r in results:
        r = dict(r)
        if "entity_group" in r:
            r["word"] = text[r["start"]:r["end"]]
        out.append(r)
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ignore_labels", [None, []])
def test_parity(pair, strategy, ignore_labels):
    ours, theirs = pair
    kw = {"aggregation_strategy": strategy}
    if ignore_labels is not None:
        kw["ignore_labels"] = ignore_labels
    expected = [_hf_words_from_text(theirs(t, **kw), t) for t in TEXTS]
    for text, exp in zip(TEXTS, expected):
        assert_same(ours(text, **kw), exp)
    for bs in (1, 3):
        assert_same(ours(TEXTS, batch_size=bs, **kw), expected)
    assert any(expected), "the tiny model should find some entities"


def test_entities_cut_from_text(pair):
    ours, _ = pair
    text = "Zürich, São Paulo & U.S.A. — ok?"
    for ent in ours(text, aggregation_strategy="simple", ignore_labels=[]):
        assert ent["word"] == text[ent["start"]:ent["end"]]
    for tok in ours(text, ignore_labels=[]):
        assert set(tok) == {"entity", "score", "index", "word", "start", "end"}


def test_stride_windows(tiny_dirs):
    import transformers

    from openformers import AutoModelForTokenClassification, AutoTokenizer

    text = " ".join(["Alice went to Paris and met Bob from Acme Corp"] * 6)
    tok = AutoTokenizer.from_pretrained(tiny_dirs["ner"], model_max_length=24)
    ours = pipeline("ner", model=AutoModelForTokenClassification.from_pretrained(tiny_dirs["ner"]), tokenizer=tok)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tiny_dirs["ner"]), model_max_length=24)
    theirs = hf_pipeline("ner", model=str(tiny_dirs["ner"]), tokenizer=hf_tok)
    for strategy in ("simple", "first", "max"):
        exp = _hf_words_from_text(theirs(text, aggregation_strategy=strategy, stride=8), text)
        assert_same(ours(text, aggregation_strategy=strategy, stride=8), exp)
        assert_same(ours([text, text[:50]], aggregation_strategy=strategy, stride=8, batch_size=4)[0], exp)
    with pytest.raises(ValueError, match="aggregation_strategy"):
        ours(text, stride=8)


def test_split_into_words(pair):
    ours, theirs = pair
    words = ["Angela", "Merkel", "visited", "Washington"]
    kw = dict(is_split_into_words=True, aggregation_strategy="first", ignore_labels=[])
    exp = [_hf_words_from_text(r, " ".join(words)) for r in theirs(words, **kw)]
    assert_same(ours(words, **kw), exp)
    assert_same(ours([words, words[:2]], **kw, batch_size=2),
                [_hf_words_from_text(theirs(w, **kw)[0], " ".join(w)) for w in (words, words[:2])])


def test_errors(pair):
    ours, _ = pair
    with pytest.raises(ValueError, match="empty"):
        ours("")
    with pytest.raises(ValueError, match="aggregation_strategy"):
        ours("x", aggregation_strategy="longest")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_byte_level_bpe(tiny_dirs, strategy):
    """RoBERTa's byte-level BPE has no sub-word prefix: words are found from the spaces in the text."""
    import warnings

    path = str(tiny_dirs["roberta_ner"])
    ours = pipeline("ner", model=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf_pipeline("ner", model=path)
        expected = [_hf_words_from_text(theirs(t, aggregation_strategy=strategy, ignore_labels=[]), t) for t in TEXTS]
    assert_same(ours(TEXTS, aggregation_strategy=strategy, ignore_labels=[], batch_size=3), expected)
