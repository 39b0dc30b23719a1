"""SentencePiece conversion against the sentencepiece library; the streaming detokenizer."""
from __future__ import annotations

import pytest

from openformers import AutoTokenizer
from openformers.tokenization import StreamingDetokenizer

from .conftest import TEXTS

spm = pytest.importorskip("sentencepiece")

# Leading spaces are left out: sentencepiece always adds its dummy "▁" while the tokenizers
# Metaspace (and so transformers) skips it when the text already starts with a space; we follow
# transformers there (checked in test_parity.py).
SP_TEXTS = [t for t in TEXTS if "<" not in t and "[" not in t and not t.startswith(" ")] + [
    "ĳ 𝔘 ﬁ", "x" * 40, "🙂", "trailing and  double  spaces  "]


@pytest.mark.parametrize("fixture", ["sp_bpe_dir", "sp_unigram_dir"])
def test_matches_sentencepiece_library(request, fixture):
    d = request.getfixturevalue(fixture)
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(d)
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.unk_token == "<unk>"
    byte_fallback_used = False
    for text in SP_TEXTS:
        expected = sp.encode(text)
        ids = tok(text)["input_ids"]
        assert ids == [sp.bos_id()] + expected, text  # BOS is added by default, like Llama
        assert tok.decode(ids, skip_special_tokens=True) == sp.decode(expected), text
        byte_fallback_used |= any(sp.is_byte(i) for i in expected)
    assert byte_fallback_used  # the corpus really exercised byte fallback
    assert len(tok) == sp.get_piece_size()


@pytest.fixture(scope="module", params=["gpt2_dir", "sp_bpe_dir", "minilm_dir"])
def tokenizer(request):
    return AutoTokenizer.from_pretrained(request.getfixturevalue(request.param))


@pytest.mark.parametrize("text", ["Hello wörld, 日本語 and emoji 🙂🚀 done.", "plain ascii text here", "🎉"])
def test_streaming_matches_full_decode(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = StreamingDetokenizer(tokenizer)
    pieces = [stream.put(i) for i in ids]
    out = "".join(pieces) + stream.flush()
    assert out == tokenizer.decode(ids)
    assert all("\ufffd" not in p for p in pieces)  # incomplete characters are held back


def test_streaming_holds_back_partial_utf8(gpt2_dir):
    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    ids = tok("a🙂", add_special_tokens=False)["input_ids"]
    assert len(ids) >= 3  # "a" plus the emoji's bytes as separate tokens
    stream = StreamingDetokenizer(tok)
    assert stream.put(ids[0]) == "a"
    assert [stream.put(i) for i in ids[1:-1]] == [""] * (len(ids) - 2)
    assert stream.put(ids[-1]) == "🙂"
    # an unfinished character at the end of the stream comes out on flush
    stream.reset()
    assert stream.put(ids[:-1]) == "a"
    tail = stream.flush()
    assert tail and set(tail) == {"\ufffd"}
    assert stream.flush() == ""


def test_streaming_skips_special_tokens(minilm_dir):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    ids = tok("hello world")["input_ids"]
    stream = StreamingDetokenizer(tok, skip_special_tokens=True)
    assert "".join(stream.put(i) for i in ids) + stream.flush() == "hello world"
