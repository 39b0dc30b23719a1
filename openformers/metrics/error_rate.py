"""Word and character error rates (jiwer's default transforms, as used by `evaluate`)."""
from __future__ import annotations

import re
from typing import Callable, Hashable, Sequence

from .base import Metric

_MULTI_SPACE = re.compile(r"\s\s+")


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit substitution / insertion / deletion costs) between sequences.

    Bit-parallel (Myers 1999, in Hyyro's formulation for global distance): one column of the
    DP table is held as vertical +1/-1 delta bit vectors in Python ints, so each token of
    ``hyp`` costs a handful of integer operations regardless of ``len(ref)``.
    """
    m = len(ref)
    if m == 0 or not hyp:
        return max(m, len(hyp))
    match: dict[Hashable, int] = {}
    for i, token in enumerate(ref):
        match[token] = match.get(token, 0) | (1 << i)
    full, top = (1 << m) - 1, 1 << (m - 1)
    pos, neg, dist = full, 0, m  # vertical deltas +1 / -1 of the current column; D[m][j]
    for token in hyp:
        eq = match.get(token, 0)
        xv = eq | neg
        xh = ((((eq & pos) + pos) & full) ^ pos) | eq
        hp = neg | (~(xh | pos) & full)  # horizontal +1 deltas
        hn = pos & xh  # horizontal -1 deltas
        if hp & top:
            dist += 1
        elif hn & top:
            dist -= 1
        hp = ((hp << 1) | 1) & full  # row 0 grows by one per column
        hn = (hn << 1) & full
        pos = hn | (~(xv | hp) & full)
        neg = hp & xv
    return dist


def _words(text: str) -> list[str]:
    text = _MULTI_SPACE.sub(" ", text).strip()
    return [w for w in text.split(" ") if w]


def _chars(text: str) -> str:
    return _MULTI_SPACE.sub(" ", text).strip()  # a string is already a sequence of characters


def _error_rate(metric: str, predictions: Sequence[str], references: Sequence[str],
                split: Callable[[str], Sequence[str]]) -> float:
    errors = total = 0
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str) or not isinstance(ref, str):
            raise TypeError(f"{metric}: predictions[{i}] and references[{i}] must be strings.")
        ref_units = split(ref)
        errors += edit_distance(ref_units, split(pred))
        total += len(ref_units)
    if total == 0:
        raise ValueError(f"{metric}: every reference is empty after whitespace normalisation; "
                         "the error rate is undefined. Pass at least one non-empty reference.")
    return errors / total


class WordErrorRate(Metric):
    """WER = (S + D + I) / (S + D + H) over whitespace-separated words; returns a float."""

    name = "wer"

    def _compute(self, predictions: Sequence[str], references: Sequence[str], concatenate_texts: bool = False) -> float:
        # concatenating or summing per pair gives the same totals
        return _error_rate(self.name, predictions, references, _words)


class CharacterErrorRate(Metric):
    """CER: the error rate over characters (spaces included); returns a float."""

    name = "cer"

    def _compute(self, predictions: Sequence[str], references: Sequence[str], concatenate_texts: bool = False) -> float:
        return _error_rate(self.name, predictions, references, _chars)
