"""Word and character error rates (jiwer's default transforms, as used by `evaluate`)."""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np

from .base import Metric

_MULTI_SPACE = re.compile(r"\s\s+")


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance (unit substitution / insertion / deletion costs) between sequences."""
    if not ref or not hyp:
        return max(len(ref), len(hyp))
    vocab: dict[Any, int] = {}
    r = np.array([vocab.setdefault(t, len(vocab)) for t in ref], dtype=np.int64)
    h = np.array([vocab.setdefault(t, len(vocab)) for t in hyp], dtype=np.int64)
    cols = np.arange(len(h) + 1, dtype=np.int64)
    row = cols.copy()  # distance from ref[:0] to every hyp prefix
    for i, token in enumerate(r, start=1):
        # best of deletion (from above) and substitution/match (diagonal) ...
        best = np.empty_like(row)
        best[0] = i
        best[1:] = np.minimum(row[1:] + 1, row[:-1] + (h != token))
        # ... then insertions along the row: cur[j] = min_k<=j best[k] + (j - k)
        row = np.minimum.accumulate(best - cols) + cols
    return int(row[-1])


def _words(text: str) -> list[str]:
    text = _MULTI_SPACE.sub(" ", text).strip()
    return [w for w in text.split(" ") if w]


def _chars(text: str) -> list[str]:
    return list(_MULTI_SPACE.sub(" ", text).strip())


def _error_rate(metric: str, predictions: Sequence[str], references: Sequence[str],
                split: Callable[[str], list[str]]) -> float:
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
