"""Build a ``tokenizers.Tokenizer`` from the older vocabulary formats.

- ``vocab.txt``: BERT WordPiece.
- ``vocab.json`` + ``merges.txt``: byte-level BPE (GPT-2, RoBERTa).
- ``tokenizer.model``: a SentencePiece model (BPE with byte fallback as in Llama, or Unigram).

Each builder returns the backend tokenizer and the default settings (special tokens, model
input names, ...) that the matching Hugging Face tokenizer class would use; the checkpoint's
``tokenizer_config.json`` overrides those defaults.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, Unigram, WordPiece

# tokenizer classes whose byte-level BPE uses RoBERTa's <s> X </s></s> Y </s> layout
ROBERTA_STYLE_CLASSES = {"roberta", "bart", "longformer", "led", "blenderbot", "markuplm", "mvp"}


def class_family(tokenizer_class: str | None) -> str:
    """Lower-case family of a tokenizer class name: ``"RobertaTokenizerFast"`` -> ``"roberta"``."""
    if not tokenizer_class:
        return ""
    name = tokenizer_class.lower()
    for suffix in ("tokenizerfast", "tokenizer"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _s(token: Any) -> str:
    return token["content"] if isinstance(token, dict) else str(token)


def load_wordpiece_vocab(path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab.setdefault(line.rstrip("\n"), index)
    if not vocab:
        raise ValueError(f"{path} is empty: a WordPiece vocab.txt holds one token per line")
    return vocab


def bert_from_vocab(path: Path, config: dict[str, Any]) -> tuple[Tokenizer, dict[str, Any]]:
    """BERT WordPiece tokenizer from ``vocab.txt`` with the settings of ``tokenizer_config.json``."""
    vocab = load_wordpiece_vocab(path)
    defaults = {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]",
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
    }
    get = lambda k: config.get(k, defaults.get(k))  # noqa: E731
    unk = _s(get("unk_token"))
    tok = Tokenizer(WordPiece(vocab, unk_token=unk, continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = _s(get("cls_token")), _s(get("sep_token"))
    for name in (cls, sep):
        if name not in vocab:
            raise ValueError(f"{path}: the special token {name!r} is not in the vocabulary")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return tok, defaults


def byte_level_bpe(vocab_path: Path, merges_path: Path, config: dict[str, Any]) -> tuple[Tokenizer, dict[str, Any]]:
    """Byte-level BPE (GPT-2; RoBERTa when ``tokenizer_class`` says so) from vocab.json + merges.txt."""
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{vocab_path} is not valid JSON ({exc}); it should map tokens to ids") from exc
    merges = []
    for line in merges_path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{merges_path}: bad merge line {line!r}; each line holds two tokens")
        merges.append((parts[0], parts[1]))
    add_prefix_space = bool(config.get("add_prefix_space", False))
    roberta = class_family(config.get("tokenizer_class")) in ROBERTA_STYLE_CLASSES
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    if roberta:
        defaults = {
            "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
            "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
        }
        cls = _s(config.get("cls_token", defaults["cls_token"]))
        sep = _s(config.get("sep_token", defaults["sep_token"]))
        for name in (cls, sep):
            if name not in vocab:
                raise ValueError(f"{vocab_path}: the special token {name!r} is not in the vocabulary")
        tok.post_processor = processors.RobertaProcessing(
            (sep, vocab[sep]), (cls, vocab[cls]),
            trim_offsets=config.get("trim_offsets", True), add_prefix_space=add_prefix_space,
        )
    else:
        defaults = {"unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    defaults["model_input_names"] = ["input_ids", "attention_mask"]
    return tok, defaults


# SentencePiece piece types (sentencepiece_model.proto)
_SP_UNKNOWN, _SP_CONTROL, _SP_USER_DEFINED, _SP_BYTE = 2, 3, 4, 6


def load_sentencepiece_proto(path: Path) -> Any:
    """Parse a SentencePiece ``.model`` file with the protobuf schema shipped by sentencepiece."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as model_pb2
    except ImportError as exc:
        raise ImportError(
            f"reading the SentencePiece model {path} needs the 'sentencepiece' and 'protobuf' packages: "
            "pip install sentencepiece protobuf"
        ) from exc
    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError
        raise ValueError(f"{path} is not a valid SentencePiece model ({exc})") from exc
    if not proto.pieces:
        raise ValueError(f"{path} holds no vocabulary pieces; is it really a SentencePiece model?")
    return proto


def merges_from_vocab(vocab: dict[str, int], skip: set[str],
                      rank: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """Recover BPE merges from a SentencePiece BPE vocabulary: a merge (a, b) exists when a, b
    and a+b are all pieces; merges rank by ``rank`` of the merged piece (default: its id)."""
    rank = rank or vocab
    ranked = []
    for piece in vocab:
        if piece in skip:
            continue
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab and right in vocab and left not in skip and right not in skip:
                ranked.append((rank[piece], len(left), len(right), vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(r[5], r[6]) for r in ranked]


def sentencepiece_tokenizer(path: Path, config: dict[str, Any]) -> tuple[Tokenizer, dict[str, Any]]:
    """Tokenizer from a SentencePiece model (Llama style: metaspace, byte fallback)."""
    proto = load_sentencepiece_proto(path)
    spec = proto.trainer_spec
    pieces = list(proto.pieces)
    byte_fallback = bool(spec.byte_fallback)
    add_prefix_space = config.get("add_prefix_space")
    if add_prefix_space is None:
        add_prefix_space = bool(proto.normalizer_spec.add_dummy_prefix) if proto.HasField("normalizer_spec") else True
    unk_id = spec.unk_id if 0 <= spec.unk_id < len(pieces) else None
    if spec.model_type == 2:  # BPE
        vocab = {p.piece: i for i, p in enumerate(pieces)}
        skip = {p.piece for p in pieces if p.type in (_SP_UNKNOWN, _SP_CONTROL, _SP_USER_DEFINED)}
        model = BPE(
            vocab=vocab, merges=merges_from_vocab(vocab, skip),
            unk_token=pieces[unk_id].piece if unk_id is not None else None,
            fuse_unk=True, byte_fallback=byte_fallback, dropout=None,
        )
    elif spec.model_type == 1:  # Unigram
        model = Unigram([(p.piece, p.score) for p in pieces], unk_id=unk_id, byte_fallback=byte_fallback)
    else:
        raise ValueError(
            f"{path}: SentencePiece model type {spec.model_type} is not supported (only BPE and Unigram)"
        )
    tok = Tokenizer(model)
    norm = []
    charsmap = proto.normalizer_spec.precompiled_charsmap if proto.HasField("normalizer_spec") else b""
    if charsmap and spec.model_type == 1:
        norm.append(normalizers.Precompiled(charsmap))
    if spec.model_type == 1 and proto.normalizer_spec.remove_extra_whitespaces:
        norm += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    if norm:
        tok.normalizer = normalizers.Sequence(norm)
    scheme = "first" if add_prefix_space else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    steps = [decoders.Replace("▁", " ")]
    if byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if add_prefix_space:
        steps.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(steps)
    # control pieces are special tokens, user-defined ones are plain added tokens
    extra = [
        AddedToken(p.piece, normalized=False, special=p.type == _SP_CONTROL)
        for p in pieces if p.type in (_SP_CONTROL, _SP_USER_DEFINED)
    ]
    if extra:
        tok.add_tokens(extra)
    defaults: dict[str, Any] = {"model_input_names": ["input_ids", "attention_mask"]}
    for key, pid, piece in (
        ("unk_token", spec.unk_id, spec.unk_piece), ("bos_token", spec.bos_id, spec.bos_piece),
        ("eos_token", spec.eos_id, spec.eos_piece), ("pad_token", spec.pad_id, spec.pad_piece),
    ):
        if 0 <= pid < len(pieces):
            defaults[key] = pieces[pid].piece or piece
    defaults["add_bos_token"] = "bos_token" in defaults
    defaults["add_eos_token"] = False
    if class_family(config.get("tokenizer_class")) in {"llama", "mistral", "gemma", "code_llama", "codellama"}:
        defaults["padding_side"] = "left"
    return tok, defaults
