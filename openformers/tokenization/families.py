"""Model-specific tokenizer names (``BertTokenizer``, ``GPT2TokenizerFast``, ``LlamaTokenizer``, ...).

Each is our :class:`PreTrainedTokenizerFast` with the family's defaults (model inputs, padding
side) and, like the reference classes, can be built straight from the family's vocabulary files
(``BertTokenizer("vocab.txt")`` or ``vocab_file=``, ``GPT2Tokenizer("vocab.json", "merges.txt")``,
``LlamaTokenizer("tokenizer.model")``). The "slow" and "Fast" spellings are the same class: both
run on the ``tokenizers`` engine.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import PreTrainedTokenizerFast

_TOKEN_TYPES = ["input_ids", "token_type_ids", "attention_mask"]


class _FamilyTokenizer(PreTrainedTokenizerFast):
    """Shared constructor: vocabulary files of the family's format, or the usual tokenizer.json."""

    _vocab_format: str = "tokenizer.json"  # "wordpiece", "bpe" or "sentencepiece"

    def __init__(self, vocab: str | os.PathLike | None = None, merges: str | os.PathLike | None = None,
                 tokenizer_file: str | os.PathLike | None = None, *, tokenizer_object: Any = None,
                 _backend: Any = None, vocab_file: str | os.PathLike | None = None,
                 merges_file: str | os.PathLike | None = None, **kwargs: Any) -> None:
        # transformers 5 names the files vocab= / merges=, transformers 4 vocab_file= / merges_file=
        vocab_file = vocab_file if vocab_file is not None else vocab
        merges_file = merges_file if merges_file is not None else merges
        if isinstance(vocab_file, dict) or isinstance(merges_file, list):
            raise TypeError(f"{type(self).__name__}: pass the vocabulary as a file path ({self._files_hint()}), "
                            "not as an in-memory dict or list")
        if _backend is None and tokenizer_object is None and tokenizer_file is None:
            if vocab_file is None:
                raise ValueError(
                    f"{type(self).__name__} needs vocab_file= ({self._files_hint()}) or tokenizer_file= "
                    f"(a tokenizer.json); or use {type(self).__name__}.from_pretrained(directory)"
                )
            _backend, defaults = self._from_vocab(Path(vocab_file), merges_file, kwargs)
            for key, value in defaults.items():
                kwargs.setdefault(key, value)
        super().__init__(tokenizer_object, tokenizer_file, _backend=_backend, **kwargs)

    def _files_hint(self) -> str:
        return {"wordpiece": "a vocab.txt", "bpe": "vocab.json, with merges_file= merges.txt",
                "sentencepiece": "a SentencePiece tokenizer.model"}.get(self._vocab_format, "a vocabulary file")

    def _from_vocab(self, vocab: Path, merges: Any, config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from . import converters

        if not vocab.is_file():
            raise FileNotFoundError(f"{type(self).__name__}: vocab_file={str(vocab)!r} does not exist")
        settings = dict(config, tokenizer_class=type(self).__name__)
        if self._vocab_format == "wordpiece":
            return converters.bert_from_vocab(vocab, settings)
        if self._vocab_format == "bpe":
            if merges is None or not Path(merges).is_file():
                raise FileNotFoundError(f"{type(self).__name__}: merges_file={merges!r} is needed beside vocab.json")
            return converters.byte_level_bpe(vocab, Path(merges), settings)
        if self._vocab_format == "sentencepiece":
            return converters.sentencepiece_tokenizer(vocab, settings)
        raise ValueError(f"{type(self).__name__} is built from a tokenizer.json: pass tokenizer_file=")


def _family(name: str, vocab_format: str, model_input_names: list[str] | None = None,
            padding_side: str = "right") -> type:
    attrs = {"_vocab_format": vocab_format, "padding_side": padding_side,
             "model_input_names": model_input_names or ["input_ids", "attention_mask"],
             "__doc__": f"The {name.replace('Tokenizer', '')} tokenizer: PreTrainedTokenizerFast with its family's defaults.",
             "__module__": __name__}
    return type(name, (_FamilyTokenizer,), attrs)


BertTokenizer = _family("BertTokenizer", "wordpiece", _TOKEN_TYPES)
DistilBertTokenizer = _family("DistilBertTokenizer", "wordpiece")
ElectraTokenizer = _family("ElectraTokenizer", "wordpiece", _TOKEN_TYPES)
GPT2Tokenizer = _family("GPT2Tokenizer", "bpe")
RobertaTokenizer = _family("RobertaTokenizer", "bpe")
Qwen2Tokenizer = _family("Qwen2Tokenizer", "bpe")
LlamaTokenizer = _family("LlamaTokenizer", "sentencepiece", padding_side="left")
CodeLlamaTokenizer = _family("CodeLlamaTokenizer", "sentencepiece", padding_side="left")
XLMRobertaTokenizer = _family("XLMRobertaTokenizer", "sentencepiece")
GemmaTokenizer = _family("GemmaTokenizer", "sentencepiece", padding_side="left")

# the reference's "Fast" spellings: the same classes
BertTokenizerFast = BertTokenizer
DistilBertTokenizerFast = DistilBertTokenizer
ElectraTokenizerFast = ElectraTokenizer
GPT2TokenizerFast = GPT2Tokenizer
RobertaTokenizerFast = RobertaTokenizer
Qwen2TokenizerFast = Qwen2Tokenizer
LlamaTokenizerFast = LlamaTokenizer
CodeLlamaTokenizerFast = CodeLlamaTokenizer
XLMRobertaTokenizerFast = XLMRobertaTokenizer
GemmaTokenizerFast = GemmaTokenizer

FAMILY_TOKENIZERS = [
    "BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer", "GPT2Tokenizer", "RobertaTokenizer",
    "Qwen2Tokenizer", "LlamaTokenizer", "CodeLlamaTokenizer", "XLMRobertaTokenizer", "GemmaTokenizer",
]
__all__ = FAMILY_TOKENIZERS + [f"{n}Fast" for n in FAMILY_TOKENIZERS]
