"""AutoTokenizer: load the tokenizer of a checkpoint directory, cache entry, GGUF file or embedded model."""
from __future__ import annotations

import os
from typing import Any

from .base import PreTrainedTokenizerFast
from .loading import load_tokenizer


class AutoTokenizer:
    """Factory: ``AutoTokenizer.from_pretrained(name_or_path, **kwargs)``.

    Files are tried in this order: tokenizer.json, vocab.txt (BERT WordPiece), vocab.json +
    merges.txt (byte-level BPE), tokenizer.model (SentencePiece); ``gguf_file=`` (or the embedded
    name ``"smollm2"``) builds the tokenizer from GGUF metadata. Keyword arguments override the
    values of tokenizer_config.json. ``trust_remote_code=True`` is refused.
    """

    def __init__(self) -> None:
        raise EnvironmentError("AutoTokenizer is a factory: use AutoTokenizer.from_pretrained(name_or_path)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *inputs: Any,
                        **kwargs: Any) -> PreTrainedTokenizerFast:
        """Load a tokenizer; see the class docstring for the file order."""
        return load_tokenizer(pretrained_model_name_or_path, tokenizer_cls=PreTrainedTokenizerFast, **kwargs)
