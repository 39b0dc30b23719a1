"""Incremental detokenization for streaming generation.

Decoding token by token is wrong in two ways: a character split over several byte tokens
decodes to U+FFFD until its last byte arrives, and decoders that depend on context (the
SentencePiece leading space, WordPiece "##" joins) give different text for a token alone than in
a sequence. The detokenizer therefore decodes a small window of recent tokens and emits only the
text that the newest token completed.
"""
from __future__ import annotations

from typing import Any, Iterable

REPLACEMENT_CHAR = "\ufffd"


class StreamingDetokenizer:
    """Feed token ids one at a time with :meth:`put`; each call returns the newly completed text.

    ``"".join(put(i) for i in ids) + flush()`` equals ``tokenizer.decode(ids)`` for the ids the
    tokenizer's decoder handles position-independently (all byte-level BPE, SentencePiece and
    WordPiece decoders).
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = False) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.reset()

    def reset(self) -> None:
        """Forget every token fed so far."""
        self.token_ids: list[int] = []
        self._prefix_offset = 0  # start of the decoding window (context for the decoder)
        self._read_offset = 0  # tokens before this index have been emitted as text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens,
                                     clean_up_tokenization_spaces=False)

    def put(self, token_id: int | Iterable[int]) -> str:
        """Add one token id (or several) and return the text they completed ("" if none yet)."""
        if hasattr(token_id, "tolist"):
            token_id = token_id.tolist()
        ids = [int(token_id)] if isinstance(token_id, int) else [int(t) for t in token_id]
        text = ""
        for tid in ids:
            self.token_ids.append(tid)
            text += self._step()
        return text

    def _step(self) -> str:
        prefix_text = self._decode(self.token_ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self.token_ids[self._prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            # emit what follows the already-emitted part; hold back an incomplete character
            delta = new_text[len(prefix_text):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.token_ids)
            return delta
        return ""

    def flush(self) -> str:
        """Text still held back (an incomplete character is emitted as U+FFFD); ends the stream."""
        prefix_text = self._decode(self.token_ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self.token_ids[self._prefix_offset:])
        delta = new_text[len(prefix_text):] if len(new_text) > len(prefix_text) else ""
        self._prefix_offset = self._read_offset = len(self.token_ids)
        return delta

    @property
    def text(self) -> str:
        """Decoded text of every token fed so far."""
        return self._decode(self.token_ids)
