"""BatchEncoding: the dict a tokenizer call returns, with alignment helpers over the encodings."""
from __future__ import annotations

from collections import UserDict
from typing import Any, NamedTuple

from tokenizers import Encoding


class CharSpan(NamedTuple):
    """Character span ``[start, end)`` in the original string."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Token span ``[start, end)`` in the encoded sequence."""

    start: int
    end: int


def to_tensor(value: Any, tensor_type: str, key: str = "") -> Any:
    """Convert nested lists to a ``torch`` ("pt") or ``numpy`` ("np") array."""
    if tensor_type == "pt":
        import torch

        if isinstance(value, torch.Tensor):
            return value
        try:
            return torch.tensor(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(_ragged_message(key)) from exc
    if tensor_type == "np":
        import numpy as np

        arr = np.asarray(value) if _is_rectangular(value) else None
        if arr is None or arr.dtype == object:
            raise ValueError(_ragged_message(key))
        return arr
    raise ValueError(f"return_tensors={tensor_type!r} is not supported; use 'pt', 'np' or None")


def _is_rectangular(value: Any) -> bool:
    if not isinstance(value, (list, tuple)) or not value:
        return True
    if isinstance(value[0], (list, tuple)):
        n = len(value[0])
        return all(isinstance(v, (list, tuple)) and len(v) == n and _is_rectangular(v) for v in value)
    return True


def _ragged_message(key: str) -> str:
    return (
        f"cannot make a tensor from {key or 'the features'}: the sequences have different lengths. "
        "Pass padding=True (and truncation=True for over-long inputs) to get equal lengths."
    )


class BatchEncoding(UserDict):
    """Output of a tokenizer call: ``input_ids``, ``attention_mask`` ... plus the ``tokenizers``
    encodings, which give token/word/char alignment (``word_ids``, ``char_to_token``, ...).

    Keys are also readable as attributes (``enc.input_ids``). ``enc[i]`` with an int gives the
    i-th ``tokenizers.Encoding``.
    """

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        encoding: Encoding | list[Encoding] | None = None,
        tensor_type: str | None = None,
        prepend_batch_axis: bool = False,
        n_sequences: int | None = None,
    ) -> None:
        super().__init__(data)
        if isinstance(encoding, Encoding):
            encoding = [encoding]
        self._encodings = encoding
        if n_sequences is None and encoding:
            n_sequences = encoding[0].n_sequences
        self._n_sequences = n_sequences
        self.convert_to_tensors(tensor_type, prepend_batch_axis=prepend_batch_axis)

    # dict behaviour -------------------------------------------------------------------------
    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            return self.data[item]
        if isinstance(item, int):
            if self._encodings is None:
                raise KeyError("int indexing needs the encodings of a fast tokenizer; use a key like 'input_ids'")
            return self._encodings[item]
        if isinstance(item, slice):
            return {key: self.data[key][item] for key in self.data}
        raise KeyError(f"invalid key {item!r}: use a feature name (str), an int or a slice")

    def __getattr__(self, item: str) -> Any:
        if item.startswith("_") or item == "data":
            raise AttributeError(item)
        try:
            return self.data[item]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no attribute or key {item!r}") from None

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data, "encodings": self._encodings, "n": self._n_sequences}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state["data"]
        self._encodings = state["encodings"]
        self._n_sequences = state["n"]

    # alignment ------------------------------------------------------------------------------
    @property
    def encodings(self) -> list[Encoding] | None:
        """The ``tokenizers.Encoding`` of each sequence in the batch (None for padded-only data)."""
        return self._encodings

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None

    @property
    def n_sequences(self) -> int | None:
        """1 for single sequences, 2 for pairs."""
        return self._n_sequences

    def _encoding(self, batch_index: int) -> Encoding:
        if self._encodings is None:
            raise ValueError("alignment methods need the encodings of a fast tokenizer call")
        return self._encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        """Token strings of sequence ``batch_index``."""
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Index of the word each token comes from (None for special and padding tokens)."""
        return self._encoding(batch_index).word_ids

    def words(self, batch_index: int = 0) -> list[int | None]:
        """Alias of :meth:`word_ids`."""
        return self.word_ids(batch_index)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0 or 1 for tokens of the first or second sequence, None for special/padding tokens."""
        return self._encoding(batch_index).sequence_ids

    @staticmethod
    def _split(batch_or_index: int, index: int | None) -> tuple[int, int]:
        return (0, batch_or_index) if index is None else (batch_or_index, index)

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        b, t = self._split(batch_or_token_index, token_index)
        return self._encoding(b).token_to_sequence(t)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        b, t = self._split(batch_or_token_index, token_index)
        return self._encoding(b).token_to_word(t)

    def word_to_tokens(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> TokenSpan | None:
        b, w = self._split(batch_or_word_index, word_index)
        span = self._encoding(b).word_to_tokens(w, sequence_index)
        return TokenSpan(*span) if span is not None else None

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        b, t = self._split(batch_or_token_index, token_index)
        span = self._encoding(b).token_to_chars(t)
        return CharSpan(*span) if span is not None else None

    def char_to_token(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        b, c = self._split(batch_or_char_index, char_index)
        return self._encoding(b).char_to_token(c, sequence_index)

    def word_to_chars(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> CharSpan | None:
        b, w = self._split(batch_or_word_index, word_index)
        span = self._encoding(b).word_to_chars(w, sequence_index)
        return CharSpan(*span) if span is not None else None

    def char_to_word(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        b, c = self._split(batch_or_char_index, char_index)
        return self._encoding(b).char_to_word(c, sequence_index)

    # tensors --------------------------------------------------------------------------------
    def convert_to_tensors(self, tensor_type: str | None = None, prepend_batch_axis: bool = False) -> "BatchEncoding":
        """Convert every value to ``torch`` ("pt") or ``numpy`` ("np") arrays in place."""
        if tensor_type is None:
            return self
        tensor_type = getattr(tensor_type, "value", tensor_type)
        for key, value in self.data.items():
            if prepend_batch_axis:
                value = [value]
            self.data[key] = to_tensor(value, tensor_type, key)
        return self

    def to(self, device: Any) -> "BatchEncoding":
        """Move every torch tensor to ``device`` (a str, int or ``torch.device``); returns self."""
        import torch

        if isinstance(device, (str, int, torch.device)):
            self.data = {k: v.to(device=device) if isinstance(v, torch.Tensor) else v for k, v in self.data.items()}
            return self
        raise TypeError(f"BatchEncoding.to expects a device (str, int or torch.device), got {type(device).__name__}")
