"""Perplexity with a tiny random causal LM against a direct per-text computation."""
import json
import math
from types import SimpleNamespace

import pytest
import tokenizers
import torch

from openformers.metrics import load

WORDS = ["<bos>", "<pad>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "[UNK]"]


class WordTokenizer:
    """A `tokenizers` word-level tokenizer with the two attributes perplexity needs."""

    def __init__(self):
        model = tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]")
        self.tok = tokenizers.Tokenizer(model)
        self.tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
        self.bos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=add_special_tokens)]}


class TinyCausalLM(torch.nn.Module):
    """One causal self-attention layer with learned positions; returns an object with `.logits`."""

    def __init__(self, vocab: int, dim: int = 16):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Embedding(32, dim)
        self.layer = torch.nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, input_ids, attention_mask=None):
        n = input_ids.shape[1]
        h = self.embed(input_ids) + self.pos(torch.arange(n))
        causal = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
        return SimpleNamespace(logits=self.head(self.layer(h, src_mask=causal)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyCausalLM(len(WORDS)).eval()


def _direct(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="mean")
    return math.exp(nll.item())


TEXTS = ["the cat sat on the mat", "a dog", "ran", "the dog ran on a mat the cat sat"]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_perplexity_matches_direct(model, batch_size):
    tok = WordTokenizer()
    out = load("perplexity").compute(predictions=TEXTS, model=model, tokenizer=tok, batch_size=batch_size)
    expected = [_direct(model, [0] + tok([t])["input_ids"][0]) for t in TEXTS]
    assert out["perplexities"] == pytest.approx(expected, rel=1e-5)
    assert out["mean_perplexity"] == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    no_bos = load("perplexity").compute(predictions=TEXTS[:2], model=model, tokenizer=tok, add_start_token=False,
                                        max_length=4)
    expected = [_direct(model, tok([t])["input_ids"][0][:4]) for t in TEXTS[:2]]
    assert no_bos["perplexities"] == pytest.approx(expected, rel=1e-5)


def test_perplexity_accumulates_and_errors(model):
    tok = WordTokenizer()
    metric = load("perplexity")
    metric.add_batch(predictions=TEXTS[:2])
    metric.add(prediction=TEXTS[2])
    out = metric.compute(model=model, tokenizer=tok)
    assert len(out["perplexities"]) == 3
    with pytest.raises(ValueError, match="at least one token"):
        load("perplexity").compute(predictions=["ran"], model=model, tokenizer=tok, add_start_token=False)
    with pytest.raises(ValueError, match="model_id"):
        load("perplexity").compute(predictions=["ran"])


def test_perplexity_from_model_path(tmp_path):
    pytest.importorskip("openformers.models.gpt2")
    from openformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
    gpt2.save_pretrained(tmp_path)
    WordTokenizer().tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "pad_token": "<pad>"}))
    out = load("perplexity").compute(predictions=TEXTS, model_id=str(tmp_path), batch_size=2)
    direct = load("perplexity").compute(predictions=TEXTS, model=gpt2, tokenizer=WordTokenizer())
    assert out["perplexities"] == pytest.approx(direct["perplexities"], rel=1e-5)
