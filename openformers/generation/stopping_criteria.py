"""Stopping criteria: ``criteria(input_ids, scores) -> BoolTensor[batch]`` (True: this row is done)."""
from __future__ import annotations

import time
from typing import Any

import torch


class StoppingCriteria:
    """Base class: subclasses implement ``__call__(input_ids, scores, **kwargs) -> BoolTensor[batch]``."""

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class MaxLengthCriteria(StoppingCriteria):
    """Done once the sequence (prompt included) has ``max_length`` tokens."""

    def __init__(self, max_length: int, max_position_embeddings: int | None = None) -> None:
        self.max_length = max_length
        self.max_position_embeddings = max_position_embeddings

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = input_ids.shape[1] >= self.max_length
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class MaxTimeCriteria(StoppingCriteria):
    """Done once ``max_time`` seconds have passed since ``initial_timestamp`` (default: construction)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None) -> None:
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class EosTokenCriteria(StoppingCriteria):
    """Done when the last token is one of ``eos_token_id`` (an int, a list or a tensor)."""

    def __init__(self, eos_token_id: int | list[int] | torch.Tensor) -> None:
        if not isinstance(eos_token_id, torch.Tensor):
            eos_token_id = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        self.eos_token_id = eos_token_id.reshape(-1).long()

    def __call__(self, input_ids: torch.LongTensor, scores: Any, new_token_length: int = 1, **kwargs: Any) -> torch.BoolTensor:
        if self.eos_token_id.device != input_ids.device:
            self.eos_token_id = self.eos_token_id.to(input_ids.device)
        last = input_ids[:, -new_token_length:]
        if self.eos_token_id.numel() == 1:
            return (last == self.eos_token_id).any(-1)
        return torch.isin(last, self.eos_token_id).any(-1)


# byte-level BPE maps every byte to a printable character; this is the inverse table
def _byte_level_decoder() -> dict[str, int]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _decoder_types(tokenizer: Any) -> set[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return set()
    found = {type(decoder).__name__}
    try:
        import json

        state = json.loads(decoder.__getstate__())
    except Exception:  # decoders without a JSON state: the class name is all we know
        return found

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                found.add(node["type"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(state)
    return found


class StopStringCriteria(StoppingCriteria):
    """Done when the text ends in one of ``stop_strings`` and the last token overlaps it.

    A stop string may span several tokens and may be followed by more characters inside the last
    token ("st" + "opped" stops on "stop"), but it must touch the last token: text that only
    appeared earlier (in the prompt, say) never stops generation. Token texts are built from the
    tokenizer vocabulary (bytes for byte-level and byte-fallback vocabularies, so a multi-byte
    character split over tokens still matches).
    """

    def __init__(self, tokenizer: Any, stop_strings: str | list[str]) -> None:
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        if not stop_strings or not all(isinstance(s, str) and s for s in stop_strings):
            raise ValueError(f"`stop_strings` must be a non-empty string or list of non-empty strings, got {stop_strings!r}")
        if tokenizer is None:
            raise ValueError("stop_strings need the model's tokenizer: pass tokenizer=... to generate()")
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        types = _decoder_types(tokenizer)
        if "ByteLevel" in types:
            self._mode = "byte_level"
            self._byte_decoder = _byte_level_decoder()
        elif "ByteFallback" in types:
            self._mode = "byte_fallback"
        else:
            self._mode = "text"
        self._targets: tuple[Any, ...] = (
            self.stop_strings if self._mode == "text" else tuple(s.encode("utf-8") for s in self.stop_strings)
        )
        # one token yields at least one character (or byte), so this many tokens cover any match
        self._window = max(len(t) for t in self._targets)
        self._piece_cache: dict[int, Any] = {}
        self._prefix_tokens: list[str] | None = None

    def _piece(self, token_id: int) -> Any:
        piece = self._piece_cache.get(token_id)
        if piece is not None:
            return piece
        tok = self.tokenizer.convert_ids_to_tokens(int(token_id))
        if tok is None:
            piece = b"" if self._mode != "text" else ""
        elif self._mode == "byte_level" and all(c in self._byte_decoder for c in tok):
            piece = bytes(self._byte_decoder[c] for c in tok)
        elif self._mode == "byte_fallback" and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            piece = bytes([int(tok[3:5], 16)])
        else:
            piece = self._token_text(tok)
            if self._mode != "text":
                piece = piece.encode("utf-8")
        self._piece_cache[token_id] = piece
        return piece

    def _token_text(self, token: str) -> str:
        # decode after a fixed prefix, so decoders that strip a leading space at the start of text
        # (SentencePiece) keep it for a token in the middle of a sequence
        prefix = "abcdef"
        if self._prefix_tokens is None:
            ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
            self._prefix_tokens = list(self.tokenizer.convert_ids_to_tokens(ids))
        text = self.tokenizer.convert_tokens_to_string(self._prefix_tokens + [token])
        at = text.find(prefix)
        return text[at + len(prefix):] if at >= 0 else text

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        tails = input_ids[:, -self._window:].tolist()
        done = []
        for row in tails:
            pieces = [self._piece(t) for t in row]
            text = pieces[0][:0].join(pieces) if pieces else ""
            last_start = len(text) - len(pieces[-1]) if pieces else 0
            # the last occurrence is the only one that can end inside the last token
            done.append(any((at := text.rfind(t)) >= 0 and at + len(t) > last_start for t in self._targets))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class StoppingCriteriaList(list):
    """A list of criteria; a row is done when any criterion says so."""

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self:
            done = done | criterion(input_ids, scores, **kwargs)
        return done

    @property
    def max_length(self) -> int | None:
        for criterion in self:
            if isinstance(criterion, MaxLengthCriteria):
                return criterion.max_length
        return None
