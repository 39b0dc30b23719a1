"""text-classification parity with transformers' pipeline on tiny random models."""
from __future__ import annotations

import pytest

from openformers import pipeline

from .helpers import assert_same, hf_pipeline

TEXTS = ["I love this movie, truly!", "terrible and awful", "ok", "The quick brown fox jumps over the lazy dog " * 3,
         "Paris is nice in spring.", "no"]


@pytest.fixture(scope="module")
def pipes(tiny_dirs):
    return {name: (pipeline("text-classification", model=str(tiny_dirs[name])),
                   hf_pipeline("text-classification", model=str(tiny_dirs[name])))
            for name in ("cls", "cls1", "multi")}


@pytest.mark.parametrize("name", ["cls", "cls1", "multi"])
@pytest.mark.parametrize("kwargs", [{}, {"top_k": None}, {"top_k": 2}, {"function_to_apply": "none"},
                                    {"function_to_apply": "sigmoid", "top_k": None},
                                    {"function_to_apply": "softmax", "top_k": 1}])
def test_single_and_batched(pipes, name, kwargs):
    ours, theirs = pipes[name]
    assert_same(ours(TEXTS[0], **kwargs), theirs(TEXTS[0], **kwargs))
    for bs in (1, 4):
        assert_same(ours(TEXTS, batch_size=bs, **kwargs), theirs(TEXTS, batch_size=bs, **kwargs))


def test_text_pairs(pipes):
    ours, theirs = pipes["cls"]
    pair = {"text": "A man eats.", "text_pair": "Someone is eating food."}
    assert_same(ours(pair), theirs(pair))
    pairs = [pair, {"text": "the sky", "text_pair": "is blue"}, {"text": "x", "text_pair": "y " * 20}]
    assert_same(ours(pairs, batch_size=3, top_k=None), theirs(pairs, batch_size=3, top_k=None))


def test_alias_and_model_object(tiny_dirs):
    from openformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["cls"])
    tok = AutoTokenizer.from_pretrained(tiny_dirs["cls"])
    ours = pipeline("sentiment-analysis", model=model, tokenizer=tok)
    theirs = hf_pipeline("sentiment-analysis", model=str(tiny_dirs["cls"]))
    assert_same(ours(TEXTS), theirs(TEXTS))


def test_errors(pipes, tiny_dirs):
    ours, _ = pipes["cls"]
    with pytest.raises(ValueError, match="empty"):
        ours("")
    with pytest.raises(ValueError, match="function_to_apply"):
        ours("x", function_to_apply="tanh")
    from openformers import AutoModelForMaskedLM, AutoTokenizer

    mlm = AutoModelForMaskedLM.from_pretrained(tiny_dirs["mlm"])
    with pytest.raises(ValueError, match="sequence-classification head"):
        pipeline("text-classification", model=mlm, tokenizer=AutoTokenizer.from_pretrained(tiny_dirs["mlm"]))


def test_decoder_classifier_batched(tmp_path):
    """A Llama sequence classifier reads the last real token of each padded row."""
    import torch
    import transformers

    from .conftest import _copy_tokenizer

    config = transformers.LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=3)
    torch.manual_seed(0)
    transformers.LlamaForSequenceClassification(config).eval().save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)
    ours = pipeline("text-classification", model=str(tmp_path))
    theirs = hf_pipeline("text-classification", model=str(tmp_path))
    assert_same(ours(TEXTS, batch_size=4, top_k=None), theirs(TEXTS, batch_size=1, top_k=None))
