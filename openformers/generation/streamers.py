"""Streamers: ``generate(..., streamer=s)`` calls ``s.put(token_ids)`` (first the prompt, then each new
token) and ``s.end()`` once at the end.

Text is produced incrementally by :class:`~openformers.tokenization.streaming.StreamingDetokenizer`:
each token costs a decode of a short window, not of the whole text, and a character split over
several byte tokens is held back until complete (never printed as U+FFFD).

:class:`TextStreamer` hands text on a word at a time: it releases the text up to the last space,
everything when the text ends with a newline or a CJK ideograph (those languages write no spaces),
and the rest at :meth:`~TextStreamer.end`.
"""
from __future__ import annotations

from queue import Queue
from typing import Any

import torch

from openformers.tokenization.streaming import StreamingDetokenizer


# CJK Unified Ideographs, their extensions A to F and the compatibility blocks
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def is_cjk_char(char: str) -> bool:
    """True for a CJK ideograph (text in those scripts has no spaces to wait for)."""
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def printable_prefix(text: str) -> int:
    """How much of ``text`` (not yet printed) a word-at-a-time stream can release now."""
    if not text or text[-1] == "\n" or is_cjk_char(text[-1]):
        return len(text)
    return text.rfind(" ") + 1


class BaseStreamer:
    """Receives tokens from ``generate``."""

    def put(self, value: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement put(value)")

    def end(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement end()")


class TextStreamer(BaseStreamer):
    """Print text to stdout as tokens arrive (batch size 1), a word at a time.

    Text is released up to its last space, whole when it ends with a newline or a CJK
    ideograph, and the rest at :meth:`end`. ``skip_prompt=True`` leaves out the prompt; ``decode_kwargs`` go to the tokenizer's decode
    (``skip_special_tokens=True`` is the common one).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self._detok = StreamingDetokenizer(tokenizer, skip_special_tokens=bool(decode_kwargs.get("skip_special_tokens", False)))
        self.next_tokens_are_prompt = True
        self._pending = ""  # decoded text not handed to on_finalized_text yet

    def put(self, value: torch.Tensor) -> None:
        if isinstance(value, torch.Tensor):
            if value.dim() > 1:
                if value.shape[0] > 1:
                    raise ValueError(f"{type(self).__name__} supports batch size 1 only, got a batch of {value.shape[0]}")
                value = value[0]
            ids = value.tolist()
        else:
            ids = [int(v) for v in value]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.next_tokens_are_prompt = False
        self._pending += self._detok.put(ids)
        cut = printable_prefix(self._pending)
        if cut:
            text, self._pending = self._pending[:cut], self._pending[cut:]
            self.on_finalized_text(text)

    def end(self) -> None:
        text, self._pending = self._pending + self._detok.flush(), ""
        self._detok.reset()
        self.next_tokens_are_prompt = True
        self.on_finalized_text(text, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Print ``text``; a newline ends the stream."""
        print(text, flush=True, end="" if not stream_end else None)


class TextIteratorStreamer(TextStreamer):
    """Queue the text for another thread to iterate over::

        streamer = TextIteratorStreamer(tok, skip_prompt=True)
        Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer)).start()
        for piece in streamer: ...

    ``timeout`` (seconds) bounds each wait for the next piece (raises ``queue.Empty``).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self) -> "TextIteratorStreamer":
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration
        return value
