"""Corpus BLEU, in two flavours.

* ``bleu``: the `evaluate` "bleu" metric (TensorFlow NMT formula): shortest reference length,
  optional add-one smoothing, scores in 0..1.
* ``sacrebleu``: sacrebleu's corpus BLEU: closest reference length, smoothing methods
  exp / floor / add-k / none, scores in 0..100.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any, Callable, Sequence

from .base import Metric
from .bleu_tokenizers import get_tokenizer, tokenize_13a


def ngram_counts(tokens: Sequence[str], max_order: int) -> Counter:
    """Counts of every n-gram of order 1..max_order."""
    counts: Counter = Counter()
    for n in range(1, max_order + 1):
        counts.update(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return counts


def _max_reference_counts(refs: Sequence[Sequence[str]], max_order: int) -> Counter:
    merged: Counter = Counter()
    for ref in refs:
        for gram, count in ngram_counts(ref, max_order).items():
            if count > merged[gram]:
                merged[gram] = count
    return merged


def _reference_lists(predictions: Sequence[Any], references: Sequence[Any], metric: str) -> list[list[str]]:
    if not predictions:
        raise ValueError(f"{metric}: got no examples; pass at least one prediction/reference pair.")
    if not all(isinstance(p, str) for p in predictions):
        raise TypeError(f"{metric}: every prediction must be a string.")
    out = []
    for i, ref in enumerate(references):
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise TypeError(f"{metric}: references[{i}] must be a string or a non-empty list of strings.")
        out.append(refs)
    return out


class Bleu(Metric):
    """BLEU as in `evaluate`'s "bleu" metric (0..1), with the 13a tokenizer by default."""

    name = "bleu"

    def _compute(self, predictions: Sequence[str], references: Sequence[Any],
                 tokenizer: Callable[[str], Any] | str | None = None, max_order: int = 4,
                 smooth: bool = False) -> dict[str, Any]:
        if max_order < 1:
            raise ValueError(f"bleu: `max_order` must be >= 1, got {max_order}.")
        if tokenizer is None:
            tokenizer = tokenize_13a
        elif isinstance(tokenizer, str):
            tokenizer = get_tokenizer(tokenizer)

        def tok(text: str) -> list[str]:
            out = tokenizer(text)
            return out.split() if isinstance(out, str) else list(out)

        if predictions and all(isinstance(p, (list, tuple)) for p in predictions):
            # pre-tokenized input, as the older `datasets` bleu metric took it:
            # predictions [[tok, ...], ...], references [[[tok, ...], ...], ...]
            pairs = []
            for i, (pred, refs) in enumerate(zip(predictions, references)):
                if not refs or not all(isinstance(r, (list, tuple)) for r in refs):
                    raise TypeError(f"bleu: with tokenized predictions, references[{i}] must be a list of token lists.")
                pairs.append(([list(r) for r in refs], list(pred)))
        else:
            pairs = [([tok(r) for r in refs], tok(pred))
                     for pred, refs in zip(predictions, _reference_lists(predictions, references, self.name))]
        matches, possible = [0] * max_order, [0] * max_order
        hyp_len = ref_len = 0
        for ref_tokens, hyp in pairs:
            hyp_len += len(hyp)
            ref_len += min(len(r) for r in ref_tokens)
            ref_counts = _max_reference_counts(ref_tokens, max_order)
            for gram, count in ngram_counts(hyp, max_order).items():
                matches[len(gram) - 1] += min(count, ref_counts[gram])
            for n in range(1, max_order + 1):
                possible[n - 1] += max(0, len(hyp) - n + 1)
        if smooth:
            precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
        else:
            precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
        geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order) if min(precisions) > 0 else 0.0
        if ref_len == 0:
            raise ValueError("bleu: all references are empty after tokenization; BLEU is undefined.")
        ratio = hyp_len / ref_len
        bp = 1.0 if ratio > 1.0 else (math.exp(1 - 1 / ratio) if ratio > 0 else 0.0)
        return {"bleu": geo_mean * bp, "precisions": precisions, "brevity_penalty": bp,
                "length_ratio": ratio, "translation_length": hyp_len, "reference_length": ref_len}


_SMOOTH_DEFAULTS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}


def sacrebleu_score(correct: list[float], total: list[float], sys_len: int, ref_len: int, smooth_method: str,
                    smooth_value: float | None, effective_order: bool) -> tuple[float, list[float], float]:
    """Score, precisions (percent) and brevity penalty from corpus statistics (updates add-k counts in place)."""
    if smooth_method not in _SMOOTH_DEFAULTS:
        raise ValueError(f"sacrebleu: unknown smooth_method {smooth_method!r}; use one of {list(_SMOOTH_DEFAULTS)}.")
    if smooth_value is None:
        smooth_value = _SMOOTH_DEFAULTS[smooth_method]
    order = len(correct)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * order
    if not any(correct):
        return 0.0, precisions, bp
    exp_factor, eff_order = 1.0, order
    for n in range(order):
        if smooth_method == "add-k" and n > 0:
            correct[n] += smooth_value
            total[n] += smooth_value
        if total[n] == 0:
            break
        if effective_order:
            eff_order = n + 1
        if correct[n] == 0:
            if smooth_method == "exp":
                exp_factor *= 2
                precisions[n] = 100.0 / (exp_factor * total[n])
            elif smooth_method == "floor":
                precisions[n] = 100.0 * smooth_value / total[n]
        else:
            precisions[n] = 100.0 * correct[n] / total[n]
    log_sum = sum(math.log(p) if p > 0 else -9999999999 for p in precisions[:eff_order])
    return bp * math.exp(log_sum / eff_order), precisions, bp


class SacreBleu(Metric):
    """sacrebleu's corpus BLEU (0..100). References: one string or a list of strings per prediction."""

    name = "sacrebleu"

    def _compute(self, predictions: Sequence[str], references: Sequence[Any], smooth_method: str = "exp",
                 smooth_value: float | None = None, force: bool = False, lowercase: bool = False,
                 tokenize: str | None = None, use_effective_order: bool = False) -> dict[str, Any]:
        if not force and sum(p.endswith(" .") for p in predictions if isinstance(p, str)) >= 100:
            warnings.warn("sacrebleu: 100 or more predictions end in a tokenized period (' .'); BLEU expects "
                          "detokenized text. Pass force=True if this is intended.", UserWarning, stacklevel=3)
        tokenizer = get_tokenizer(tokenize or "13a")
        if smooth_method not in _SMOOTH_DEFAULTS:
            raise ValueError(f"sacrebleu: unknown smooth_method {smooth_method!r}; use one of {list(_SMOOTH_DEFAULTS)}.")

        def prep(text: str) -> list[str]:
            return tokenizer((text.lower() if lowercase else text).rstrip()).split()

        max_order = 4
        correct, total = [0] * max_order, [0] * max_order
        sys_len = ref_len = 0
        for hyp_text, refs in zip(predictions, _reference_lists(predictions, references, self.name)):
            hyp = prep(hyp_text)
            ref_tokens = [prep(r) for r in refs]
            # closest reference length; ties go to the shorter reference
            closest = min((abs(len(hyp) - len(r)), len(r)) for r in ref_tokens)[1]
            sys_len += len(hyp)
            ref_len += closest
            ref_counts = _max_reference_counts(ref_tokens, max_order)
            for gram, count in ngram_counts(hyp, max_order).items():
                total[len(gram) - 1] += count
                correct[len(gram) - 1] += min(count, ref_counts[gram])
        score, precisions, bp = sacrebleu_score(correct, total, sys_len, ref_len, smooth_method,
                                                smooth_value, use_effective_order)
        return {"score": score, "counts": correct, "totals": total, "precisions": precisions, "bp": bp,
                "sys_len": sys_len, "ref_len": ref_len}


class GoogleBleu(Metric):
    """Google BLEU (GLEU, Wu et al. 2016): matched n-grams over max(hypothesis, reference) n-grams,
    pooled over the corpus; per example the reference with the best ratio counts."""

    name = "google_bleu"

    def _compute(self, predictions: Sequence[str], references: Sequence[Any],
                 tokenizer: Callable[[str], Any] | str | None = None, min_len: int = 1,
                 max_len: int = 4) -> dict[str, float]:
        if not 1 <= min_len <= max_len:
            raise ValueError(f"google_bleu: need 1 <= min_len <= max_len, got {min_len}, {max_len}.")
        tokenizer = tokenize_13a if tokenizer is None else (get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer)

        def grams(text: str) -> Counter:
            out = tokenizer(text)
            tokens = out.split() if isinstance(out, str) else list(out)
            counts: Counter = Counter()
            for n in range(min_len, max_len + 1):
                counts.update(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
            return counts

        matched = total = 0
        for pred, refs in zip(predictions, _reference_lists(predictions, references, self.name)):
            hyp = grams(pred)
            hyp_total = sum(hyp.values())
            best: tuple[int, int] | None = None
            for ref in refs:
                ref_grams = grams(ref)
                n_all = max(hyp_total, sum(ref_grams.values()))
                if n_all == 0:
                    continue
                tp = sum((ref_grams & hyp).values())
                if best is None or tp / n_all > best[0] / best[1]:
                    best = (tp, n_all)
            if best is not None:
                matched, total = matched + best[0], total + best[1]
        return {"google_bleu": matched / total if total else 0.0}
