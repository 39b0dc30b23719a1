"""chrF / chrF++ (Popovic 2015, 2017) with sacrebleu's corpus statistics, as `evaluate`'s "chrf"."""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from .base import Metric
from .text_overlap import _reference_lists

_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _char_ngrams(text: str, order: int, whitespace: bool) -> list[Counter]:
    if not whitespace:
        text = "".join(text.split())
    return [Counter(text[i:i + n] for i in range(len(text) - n + 1)) for n in range(1, order + 1)]


def _words(text: str) -> list[str]:
    """Whitespace words with one leading or trailing ASCII punctuation mark split off."""
    out: list[str] = []
    for w in text.split():
        if len(w) > 1 and w[-1] in _PUNCT:
            out += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in _PUNCT:
            out += [w[0], w[1:]]
        else:
            out.append(w)
    return out


def _word_ngrams(words: list[str], order: int) -> list[Counter]:
    return [Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1)) for n in range(1, order + 1)]


def _f_score(stats: list[float], beta: float, eps_smoothing: bool) -> float:
    """chrF from [hyp, ref, match] counts per n-gram order; orders missing on either side are skipped."""
    eps, factor = 1e-16, beta**2
    smoothed = 0.0
    prec_sum = rec_sum = 0.0
    effective = 0
    orders = len(stats) // 3
    for i in range(orders):
        n_hyp, n_ref, n_match = stats[3 * i: 3 * i + 3]
        prec = n_match / n_hyp if n_hyp > 0 else eps
        rec = n_match / n_ref if n_ref > 0 else eps
        denom = factor * prec + rec
        smoothed += (1 + factor) * prec * rec / denom if denom > 0 else eps
        if n_hyp > 0 and n_ref > 0:
            prec_sum, rec_sum, effective = prec_sum + prec, rec_sum + rec, effective + 1
    if eps_smoothing:
        return 100 * smoothed / orders
    if effective:
        prec_sum, rec_sum = prec_sum / effective, rec_sum / effective
    else:
        prec_sum = rec_sum = 0.0
    if prec_sum + rec_sum == 0:
        return 0.0
    return 100 * (1 + factor) * prec_sum * rec_sum / (factor * prec_sum + rec_sum)


class ChrF(Metric):
    """Character n-gram F-score (chrF; chrF++ with ``word_order=2``), 0..100.

    Output: ``{"score", "char_order", "word_order", "beta"}``.
    """

    name = "chrf"

    def _compute(self, predictions: Sequence[str], references: Sequence[Any], char_order: int = 6,
                 word_order: int = 0, beta: int = 2, lowercase: bool = False, whitespace: bool = False,
                 eps_smoothing: bool = False) -> dict[str, Any]:
        if char_order < 1 or word_order < 0:
            raise ValueError("chrf: `char_order` must be >= 1 and `word_order` >= 0.")

        def ngrams(text: str) -> list[Counter]:
            text = text.lower() if lowercase else text
            grams = _char_ngrams(text, char_order, whitespace)
            return grams + (_word_ngrams(_words(text), word_order) if word_order else [])

        totals = [0.0] * (3 * (char_order + word_order))
        for pred, refs in zip(predictions, _reference_lists(predictions, references, self.name)):
            hyp = ngrams(pred)
            best, best_f = None, -1.0
            for ref in refs:  # keep the statistics of the best-scoring reference
                stats: list[float] = []
                for h, r in zip(hyp, ngrams(ref)):
                    hyp_total = sum(h.values())
                    stats += [hyp_total if r else 0, sum(r.values()), sum(min(c, r[g]) for g, c in h.items() if g in r)]
                f = _f_score(stats, beta, eps_smoothing)
                if f > best_f:
                    best, best_f = stats, f
            totals = [a + b for a, b in zip(totals, best)]
        return {"score": _f_score(totals, beta, eps_smoothing), "char_order": char_order,
                "word_order": word_order, "beta": beta}
