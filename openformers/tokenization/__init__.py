"""Tokenizers: the Hugging Face tokenizer API over the `tokenizers` engine."""
from .auto import AutoTokenizer
from .base import PreTrainedTokenizerFast
from .batch_encoding import BatchEncoding, CharSpan, TokenSpan
from .streaming import StreamingDetokenizer

__all__ = ["AutoTokenizer", "PreTrainedTokenizerFast", "BatchEncoding", "CharSpan", "TokenSpan", "StreamingDetokenizer"]
