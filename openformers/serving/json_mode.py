"""``response_format={"type": "json_object"}``: a logits mask that keeps the output valid JSON.

A small pushdown automaton reads the output character by character (an object at the top level,
then any JSON values inside; at most one whitespace character in a row outside strings, so the
model cannot stall on blanks). At each step the mask allows the tokens whose whole text keeps the
output a valid prefix of a JSON object, and the end-of-sequence tokens only once the object is
closed (then nothing else). Masks are cached per automaton state, and the vocabulary is grouped by
first character, so a state is scanned once and most tokens are rejected on their first character.
"""
from __future__ import annotations

from typing import Any

import torch

from openformers.generation.logits_process import LogitsProcessor

# state: (stack of "o"/"a", mode, aux, last char was blank)
State = tuple[str, str, str, bool]
START: State = ("", "start", "", False)
_BLANK = " \n\t\r"
_NUM_END = ("zero", "int", "frac", "exp")


def _after_value(stack: str) -> State:
    return (stack, "done", "", False) if not stack else (stack, "after", "", False)


def _value(stack: str, ch: str) -> State | None:
    """The state after ``ch`` starts a value."""
    if ch == "{":
        return (stack + "o", "obj_first", "", False)
    if ch == "[":
        return (stack + "a", "arr_first", "", False)
    if ch == '"':
        return (stack, "str", "", False)
    if ch == "-":
        return (stack, "num", "minus", False)
    if ch == "0":
        return (stack, "num", "zero", False)
    if ch in "123456789":
        return (stack, "num", "int", False)
    for word in ("true", "false", "null"):
        if ch == word[0]:
            return (stack, "lit", word[1:], False)
    return None


def step(state: State, ch: str) -> State | None:
    """The automaton's state after ``ch``, or None when ``ch`` cannot follow."""
    stack, mode, aux, blank = state
    if mode == "str":
        if aux == "":
            if ch == '"':
                return _end_string(stack)
            if ch == "\\":
                return (stack, "str", "esc", False)
            if ord(ch) < 0x20:
                return None
            return state
        if aux == "esc":
            if ch in '"\\/bfnrt':
                return (stack, "str", "", False)
            if ch == "u":
                return (stack, "str", "u4", False)
            return None
        # aux "uN": N hex digits left
        if ch not in "0123456789abcdefABCDEF":
            return None
        left = int(aux[1]) - 1
        return (stack, "str", f"u{left}" if left else "", False)
    if mode == "num":
        nxt = _number(aux, ch)
        if nxt is not None:
            return (stack, "num", nxt, False)
        if aux not in _NUM_END:
            return None
        return step(_after_value(stack), ch)
    if mode == "lit":
        if ch != aux[0]:
            return None
        return (stack, "lit", aux[1:], False) if len(aux) > 1 else _after_value(stack)
    if ch in _BLANK:
        if blank or mode in ("start", "done"):
            return None
        return (stack, mode, aux, True)
    if mode == "start":
        return (stack + "o", "obj_first", "", False) if ch == "{" else None
    if mode == "done":
        return None
    if mode in ("obj_first", "key"):
        if ch == '"':
            return (stack + "K", "str", "", False)  # "K" marks a key string on the stack
        if ch == "}" and mode == "obj_first":
            return _after_value(stack[:-1])
        return None
    if mode == "colon":
        return (stack, "value", "", False) if ch == ":" else None
    if mode == "arr_first":
        if ch == "]":
            return _after_value(stack[:-1])
        return _value(stack, ch)
    if mode == "value":
        return _value(stack, ch)
    if mode == "after":
        top = stack[-1]
        if ch == ",":
            return (stack, "key" if top == "o" else "value", "", False)
        if (ch == "}" and top == "o") or (ch == "]" and top == "a"):
            return _after_value(stack[:-1])
        return None
    return None


def _end_string(stack: str) -> State:
    if stack.endswith("K"):  # a key ends: a colon follows
        return (stack[:-1], "colon", "", False)
    return _after_value(stack)


def _number(aux: str, ch: str) -> str | None:
    digit = ch in "0123456789"
    if aux == "minus":
        return "zero" if ch == "0" else ("int" if digit else None)
    if aux == "zero":
        return "dot" if ch == "." else ("e" if ch in "eE" else None)
    if aux == "int":
        return "int" if digit else ("dot" if ch == "." else ("e" if ch in "eE" else None))
    if aux == "dot":
        return "frac" if digit else None
    if aux == "frac":
        return "frac" if digit else ("e" if ch in "eE" else None)
    if aux == "e":
        return "esign" if ch in "+-" else ("exp" if digit else None)
    if aux in ("esign", "exp"):
        return "exp" if digit else None
    return None


def run(state: State | None, text: str) -> State | None:
    for ch in text:
        if state is None:
            return None
        state = step(state, ch)
    return state


class JsonVocabulary:
    """Token texts of a tokenizer grouped by first character, and the per-state masks built from them."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: list[int]) -> None:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.vocab_size = vocab_size
        self.eos = [t for t in eos_token_ids if t < vocab_size]
        self.texts: list[str] = []
        self.groups: dict[str, list[int]] = {}
        plain = torch.zeros(vocab_size, dtype=torch.bool)
        for tid in range(vocab_size):
            text = "" if tid in special or tid >= len(tokenizer) else tokenizer.decode([tid])
            if "\ufffd" in text:
                text = ""  # a partial UTF-8 character: left out
            self.texts.append(text)
            if text:
                self.groups.setdefault(text[0], []).append(tid)
                plain[tid] = not any(c in '"\\' or ord(c) < 0x20 for c in text)
        self.plain_string = plain  # tokens that keep a string open and change nothing else
        self._masks: dict[State, torch.Tensor] = {}

    def mask(self, state: State) -> torch.Tensor:
        """Boolean [vocab] of the tokens allowed in ``state``."""
        cached = self._masks.get(state)
        if cached is not None:
            return cached
        if state[1] == "done":
            allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
        elif state[1] == "str" and state[2] == "":
            allowed = self.plain_string.clone()
            self._scan(state, allowed, skip=self.plain_string)
        else:
            allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
            self._scan(state, allowed, skip=None)
        if state[1] == "done" or not bool(allowed.any()):
            allowed[self.eos] = True
        if len(self._masks) > 4096:
            self._masks.clear()
        self._masks[state] = allowed
        return allowed

    def _scan(self, state: State, allowed: torch.Tensor, skip: torch.Tensor | None) -> None:
        ids: list[int] = []
        for first, group in self.groups.items():
            after_first = step(state, first)
            if after_first is None:
                continue
            for tid in group:
                if skip is not None and skip[tid]:
                    continue
                if run(after_first, self.texts[tid][1:]) is not None:
                    ids.append(tid)
        if ids:
            allowed[torch.tensor(ids, dtype=torch.long)] = True


class JsonObjectLogitsProcessor(LogitsProcessor):
    """Masks the scores so that the new tokens (after ``prompt_length``) spell a JSON object."""

    def __init__(self, vocabulary: JsonVocabulary, prompt_length: int) -> None:
        self.vocabulary = vocabulary
        self.prompt_length = prompt_length
        self.state: State | None = START
        self._seen = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        new = input_ids[0, self.prompt_length + self._seen:].tolist()
        for tid in new:
            if self.state is not None and tid < len(self.vocabulary.texts):
                self.state = run(self.state, self.vocabulary.texts[tid])
        self._seen += len(new)
        if self.state is None:  # cannot happen while the mask is obeyed; end the output
            allowed = torch.zeros(scores.shape[-1], dtype=torch.bool)
            allowed[self.vocabulary.eos] = True
        else:
            allowed = self.vocabulary.mask(self.state)
        if allowed.shape[0] < scores.shape[-1]:
            allowed = torch.cat([allowed, allowed.new_zeros(scores.shape[-1] - allowed.shape[0])])
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))
