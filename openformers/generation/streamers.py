"""Streamers: ``generate(..., streamer=s)`` calls ``s.put(token_ids)`` (first the prompt, then each new
token) and ``s.end()`` once at the end.

Text is produced incrementally by :class:`~openformers.tokenization.streaming.StreamingDetokenizer`:
each token costs a decode of a short window, not of the whole text, and a character split over
several byte tokens is held back until complete (never printed as U+FFFD).
"""
from __future__ import annotations

from queue import Queue
from typing import Any

import torch

from openformers.tokenization.streaming import StreamingDetokenizer


class BaseStreamer:
    """Receives tokens from ``generate``."""

    def put(self, value: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement put(value)")

    def end(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement end()")


class TextStreamer(BaseStreamer):
    """Print text to stdout as tokens arrive (batch size 1).

    ``skip_prompt=True`` leaves out the prompt; ``decode_kwargs`` go to the tokenizer's decode
    (``skip_special_tokens=True`` is the common one).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self._detok = StreamingDetokenizer(tokenizer, skip_special_tokens=bool(decode_kwargs.get("skip_special_tokens", False)))
        self.next_tokens_are_prompt = True

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
        text = self._detok.put(ids)
        if text:
            self.on_finalized_text(text)

    def end(self) -> None:
        text = self._detok.flush()
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
