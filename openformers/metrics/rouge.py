"""ROUGE-N, ROUGE-L and summary-level ROUGE-Lsum F-measures (Lin 2004), as the rouge_score package."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from .base import Metric
from .porter import stem

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_VALID = re.compile(r"^[a-z0-9]+$")


def tokenize(text: str, use_stemmer: bool = False) -> list[str]:
    """Lower-case, keep runs of [a-z0-9], optionally Porter-stem tokens longer than 3 letters."""
    tokens = _NON_ALNUM.sub(" ", text.lower()).split()
    if use_stemmer:
        tokens = [stem(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if _VALID.match(t)]


def _fmeasure(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ngram_score(target: list[str], prediction: list[str], n: int) -> tuple[float, float, float]:
    t = Counter(tuple(target[i:i + n]) for i in range(len(target) - n + 1))
    p = Counter(tuple(prediction[i:i + n]) for i in range(len(prediction) - n + 1))
    overlap = sum((t & p).values())
    precision = overlap / max(sum(p.values()), 1)
    recall = overlap / max(sum(t.values()), 1)
    return precision, recall, _fmeasure(precision, recall)


def _lcs_table(ref: list[str], can: list[str]) -> list[list[int]]:
    table = [[0] * (len(can) + 1) for _ in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        row, prev, r = table[i], table[i - 1], ref[i - 1]
        for j in range(1, len(can) + 1):
            row[j] = prev[j - 1] + 1 if r == can[j - 1] else max(prev[j], row[j - 1])
    return table


def lcs_length(ref: Sequence[str], can: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over ``ref`` (Allison-Dix / Hyyro)."""
    match: dict[str, int] = {}
    for i, token in enumerate(ref):
        match[token] = match.get(token, 0) | (1 << i)
    full = (1 << len(ref)) - 1
    v = full  # zero bits mark reference positions used by the LCS so far
    for token in can:
        u = v & match.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(ref) - bin(v).count("1")


def _lcs_score(target: list[str], prediction: list[str]) -> tuple[float, float, float]:
    if not target or not prediction:
        return 0.0, 0.0, 0.0
    lcs = lcs_length(target, prediction)
    precision, recall = lcs / len(prediction), lcs / len(target)
    return precision, recall, _fmeasure(precision, recall)


def _lcs_positions(ref: list[str], can: list[str]) -> list[int]:
    """Indices into ``ref`` of one LCS, walking back and preferring to drop reference tokens on ties."""
    table = _lcs_table(ref, can)
    i, j, out = len(ref), len(can), []
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return out[::-1]


def _summary_lcs_score(ref_sents: list[list[str]], can_sents: list[list[str]]) -> tuple[float, float, float]:
    """Union-LCS over sentences; each token is credited at most as often as it occurs on both sides."""
    m, n = sum(map(len, ref_sents)), sum(map(len, can_sents))
    if not ref_sents or not can_sents or not m or not n:
        return 0.0, 0.0, 0.0
    ref_left = Counter(t for s in ref_sents for t in s)
    can_left = Counter(t for s in can_sents for t in s)
    hits = 0
    for ref in ref_sents:
        union = sorted(set().union(*(_lcs_positions(ref, can) for can in can_sents)))
        for token in (ref[i] for i in union):
            if ref_left[token] > 0 and can_left[token] > 0:
                hits += 1
                ref_left[token] -= 1
                can_left[token] -= 1
    precision, recall = hits / n, hits / m
    return precision, recall, _fmeasure(precision, recall)


def score_pair(target: str, prediction: str, rouge_types: Sequence[str],
               tok: Callable[[str], list[str]]) -> dict[str, tuple[float, float, float]]:
    """(precision, recall, fmeasure) per rouge type for one target/prediction pair."""
    target_tokens, prediction_tokens = tok(target), tok(prediction)
    out = {}
    for rouge_type in rouge_types:
        if rouge_type == "rougeL":
            out[rouge_type] = _lcs_score(target_tokens, prediction_tokens)
        elif rouge_type == "rougeLsum":
            sents = lambda text: [tok(s) for s in text.split("\n") if s]  # noqa: E731
            out[rouge_type] = _summary_lcs_score(sents(target), sents(prediction))
        else:
            out[rouge_type] = _ngram_score(target_tokens, prediction_tokens, int(rouge_type[5:]))
    return out


class Rouge(Metric):
    """ROUGE F-measures: ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum`` (sentences split on newlines).

    With ``use_aggregator=True`` (default) each value is the mean F-measure over examples
    (`evaluate` reports the median of bootstrap means, which estimates the same number);
    otherwise each value is a list of per-example F-measures. A list of references per
    prediction scores against the best-matching one.
    """

    name = "rouge"

    def _compute(self, predictions: Sequence[str], references: Sequence[Any], rouge_types: Sequence[str] | None = None,
                 use_aggregator: bool = True, use_stemmer: bool = False,
                 tokenizer: Callable[[str], list[str]] | None = None) -> dict[str, Any]:
        rouge_types = list(rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"])
        for rouge_type in rouge_types:
            if rouge_type not in ("rougeL", "rougeLsum") and not re.fullmatch(r"rouge[1-9]", rouge_type):
                raise ValueError(f"rouge: invalid rouge type {rouge_type!r}; use 'rouge1'..'rouge9', 'rougeL' or 'rougeLsum'.")
        tok = tokenizer if tokenizer is not None else (lambda text: tokenize(text, use_stemmer))
        per_type: dict[str, list[float]] = {t: [] for t in rouge_types}
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            refs = [ref] if isinstance(ref, str) else list(ref)
            if not isinstance(pred, str) or not refs or not all(isinstance(r, str) for r in refs):
                raise TypeError(f"rouge: predictions[{i}] must be a string and references[{i}] a string or list of strings.")
            scores = [score_pair(r, pred, rouge_types, tok) for r in refs]
            for t in rouge_types:
                # best reference by F-measure (first one on ties)
                per_type[t].append(scores[int(np.argmax([s[t][2] for s in scores]))][t][2])
        if use_aggregator:
            if not predictions:
                raise ValueError("rouge: got no examples.")
            return {t: float(np.mean(v)) for t, v in per_type.items()}
        return per_type
