"""fill-mask and zero-shot-classification parity with transformers' pipelines."""
from __future__ import annotations

import pytest

from openformers import pipeline

from .helpers import assert_same, hf_pipeline

MASKED = ["Paris is the [MASK] of France.", "I [MASK] you.", "[MASK] [MASK] and more words here", "a [MASK]"]


@pytest.fixture(scope="module")
def fill(tiny_dirs):
    return pipeline("fill-mask", model=str(tiny_dirs["mlm"])), hf_pipeline("fill-mask", model=str(tiny_dirs["mlm"]))


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 3}, {"targets": ["capital", "city", "love", "zebra"]},
                                    {"targets": "love", "top_k": 2}, {"targets": ["city", "capital"], "top_k": 10}])
def test_fill_mask(fill, kwargs):
    ours, theirs = fill
    assert_same(ours(MASKED[0], **kwargs), theirs(MASKED[0], **kwargs))
    for bs in (1, 3):
        assert_same(ours(MASKED, batch_size=bs, **kwargs), theirs(MASKED, batch_size=bs, **kwargs))


def test_fill_mask_errors(fill):
    ours, _ = fill
    with pytest.raises(ValueError, match="no mask token"):
        ours("nothing masked here")


@pytest.fixture(scope="module")
def zero(tiny_dirs):
    return (pipeline("zero-shot-classification", model=str(tiny_dirs["nli"])),
            hf_pipeline("zero-shot-classification", model=str(tiny_dirs["nli"])))


SEQS = ["Who are you voting for in 2020?", "The team won the final match last night.", "Stocks fell sharply."]


@pytest.mark.parametrize("kwargs", [{}, {"multi_label": True}, {"hypothesis_template": "This text is about {}."}])
@pytest.mark.parametrize("labels", [["politics", "sports", "economy", "cooking"], ["sports"], "politics, economy"])
def test_zero_shot(zero, kwargs, labels):
    ours, theirs = zero
    assert_same(ours(SEQS[0], candidate_labels=labels, **kwargs), theirs(SEQS[0], candidate_labels=labels, **kwargs))
    for bs in (1, 5):
        assert_same(ours(SEQS, candidate_labels=labels, batch_size=bs, **kwargs),
                    theirs(SEQS, candidate_labels=labels, batch_size=bs, **kwargs))
    # labels given positionally
    assert_same(ours(SEQS[1], labels, **kwargs), theirs(SEQS[1], labels, **kwargs))


def test_zero_shot_errors(zero, tiny_dirs):
    ours, _ = zero
    with pytest.raises(ValueError, match="at least one label"):
        ours("text", candidate_labels=[])
    with pytest.raises(ValueError, match="no '\\{\\}'"):
        ours("text", candidate_labels=["a"], hypothesis_template="no placeholder")
    not_nli = pipeline("zero-shot-classification", model=str(tiny_dirs["cls"]))
    with pytest.raises(ValueError, match="entailment"):
        not_nli("text", candidate_labels=["a", "b"])
