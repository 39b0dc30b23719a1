"""Build the tokenizer a GGUF file describes in its ``tokenizer.ggml.*`` metadata.

Supported vocabularies (``tokenizer.ggml.model``): ``"gpt2"`` (byte-level BPE with merges) and
``"llama"`` (SentencePiece-style BPE with scores and byte fallback). The metadata block is read
with the memory-mapped reader of :mod:`openformers.core.gguf` (no extra package needed).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from openformers.core.gguf import read_gguf_metadata

from .converters import merges_from_vocab

# llama.cpp token types
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# pre-tokenizer splits by tokenizer.ggml.pre (the regexes llama.cpp uses for these vocabularies)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
           "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}
# StarCoder-family vocabularies (SmolLM) split every digit on its own before byte-level BPE
_DIGIT_SPLIT = {"smollm", "starcoder", "refact", "codeshell"}


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tokenizer_from_gguf(path: Path) -> tuple[Tokenizer, dict[str, Any]]:
    """The backend tokenizer and the tokenizer settings stored in a GGUF file."""
    meta = read_gguf_metadata(path)
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if kind is None or not tokens:
        raise ValueError(f"{path} has no tokenizer metadata (tokenizer.ggml.model / tokenizer.ggml.tokens)")
    _check_vocabulary(path, meta, tokens)
    types = meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
    if kind == "gpt2":
        tok = _byte_level(meta, tokens)
        add_bos_default = False
    elif kind == "llama":
        tok = _sentencepiece(meta, tokens, types)
        add_bos_default = True  # llama.cpp's default for SentencePiece vocabularies
    else:
        raise ValueError(f"{path}: tokenizer.ggml.model={kind!r} is not supported (only 'gpt2' and 'llama')")
    alphabet = set(byte_to_unicode().values()) if kind == "gpt2" else None
    control = [AddedToken(t, normalized=False, special=True) for t, ty in zip(tokens, types)
               if ty == _CONTROL and (alphabet is None or set(t) <= alphabet)]
    if control:
        tok.add_special_tokens(control)
    user = [AddedToken(t, normalized=False, special=False) for t, ty in zip(tokens, types) if ty == _USER_DEFINED]
    if user:
        tok.add_tokens(user)
    config: dict[str, Any] = {"model_input_names": ["input_ids", "attention_mask"]}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        index = meta.get(f"tokenizer.ggml.{key}")
        config[name] = tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None
    config["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default))
    config["add_eos_token"] = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    tok.post_processor = None  # rebuilt from add_bos_token / add_eos_token by the front-end
    return tok, config


def _check_vocabulary(path: Path, meta: dict[str, Any], tokens: Any) -> None:
    """The vocabulary arrays must be lists of the right kind and length (``ValueError`` naming the key)."""
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{path}: tokenizer.ggml.tokens must be an array of strings")
    for key, kinds in (("tokenizer.ggml.scores", (int, float)), ("tokenizer.ggml.token_type", (int,))):
        values = meta.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(tokens) or not all(type(v) in kinds for v in values):
            got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
            raise ValueError(f"{path}: {key} must hold one number per token ({len(tokens)}), got {got}; the file is corrupt")
    merges = meta.get("tokenizer.ggml.merges")
    if merges is not None and (not isinstance(merges, list) or not all(isinstance(m, str) and " " in m for m in merges)):
        raise ValueError(f"{path}: tokenizer.ggml.merges must be an array of strings 'a b'")
    for key in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"):
        index = meta.get(f"tokenizer.ggml.{key}")
        # an out-of-range bos/eos/pad id is left unset (some converters write one); the unknown token is looked up
        if index is not None and (type(index) is not int or (key == "unknown_token_id" and not 0 <= index < len(tokens))):
            raise ValueError(f"{path}: tokenizer.ggml.{key} = {index!r} is not the id of one of the {len(tokens)} tokens")


def _byte_level(meta: dict[str, Any], tokens: list[str]) -> Tokenizer:
    spelling = byte_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for index, token in enumerate(tokens):
        spelled = token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))
        vocab.setdefault(spelled, index)
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="",
                        fuse_unk=False))
    pre = meta.get("tokenizer.ggml.pre")
    if pre in _SPLITS:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif pre in _DIGIT_SPLIT:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece(meta: dict[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(tokens)}
    if meta.get("tokenizer.ggml.merges"):
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    else:
        scores = meta.get("tokenizer.ggml.scores") or [-float(i) for i in range(len(tokens))]
        # higher score merges first; rank by descending score
        order = sorted(range(len(tokens)), key=lambda i: -scores[i])
        rank = {tokens[i]: r for r, i in enumerate(order)}
        skip = {t for t, ty in zip(tokens, types) if ty in (_UNKNOWN, _CONTROL, _USER_DEFINED)}
        merges = merges_from_vocab(vocab, skip, rank=rank)
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None else None
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if prefix else "never",
                                                 split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(steps)
    return tok
