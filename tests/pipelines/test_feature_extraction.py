"""feature-extraction with the real MiniLM: parity with transformers, and sentence embeddings."""
from __future__ import annotations

import pytest
import torch

from openformers import pipeline

from .conftest import minilm_dir
from .helpers import assert_same, hf_pipeline

TEXTS = ["This is an example sentence", "Each sentence is converted", "short", "A much longer sentence " * 8]


@pytest.fixture(scope="module")
def pair():
    return pipeline("feature-extraction"), hf_pipeline("feature-extraction", model=str(minilm_dir()))


def test_token_embeddings(pair):
    ours, theirs = pair
    assert_same(ours(TEXTS[0]), theirs(TEXTS[0]))
    # transformers returns the padded positions too when it batches; we keep each text's own tokens,
    # so every batch size gives transformers' unbatched result
    expected = theirs(TEXTS, batch_size=1)
    for bs in (1, 4):
        assert_same(ours(TEXTS, batch_size=bs), expected)
    t_ours, t_theirs = ours(TEXTS[1], return_tensors=True), theirs(TEXTS[1], return_tensors=True)
    assert isinstance(t_ours, torch.Tensor) and t_ours.shape == t_theirs.shape
    assert_same(t_ours, t_theirs)


def _reference_sentence_embeddings(texts):
    """What sentence-transformers computes for all-MiniLM-L6-v2: masked mean pooling, then L2 norm."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))
    model = transformers.AutoModel.from_pretrained(str(minilm_dir())).eval()
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_sentence_embeddings(pair):
    ours, _ = pair
    ref = _reference_sentence_embeddings(TEXTS)
    for bs in (1, 3):
        got = torch.tensor(ours(TEXTS, pooling="mean", normalize=True, batch_size=bs))
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-5)
    emb = pipeline("feature-extraction", pooling="mean", normalize=True)
    one = emb(TEXTS[0], return_tensors=True)
    assert one.shape == (384,) and abs(one.norm().item() - 1) < 1e-5
    assert torch.allclose(one, ref[0], atol=1e-5)


def test_pooling_options(pair):
    ours, _ = pair
    tokens = torch.tensor(ours(TEXTS[3]))[0]
    assert torch.allclose(torch.tensor(ours(TEXTS[3], pooling="cls")), tokens[0], atol=1e-6)
    assert torch.allclose(torch.tensor(ours(TEXTS[3], pooling="max")), tokens.max(0).values, atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        ours("x", pooling="sum")
    with pytest.raises(ValueError, match="needs a pooling"):
        ours("x", normalize=True)
