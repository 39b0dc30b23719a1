"""Question-answering metrics: exact_match (string equality) and squad (SQuAD v1.1 EM / F1)."""
from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from typing import Any, Sequence

import numpy as np

from .base import Metric


def _strings(values: Sequence[Any], name: str, metric: str) -> list[str]:
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"{metric}: every item of `{name}` must be a string.")
    return list(values)


class ExactMatch(Metric):
    """Fraction (0..1) of predictions identical to their reference after optional normalisation."""

    name = "exact_match"

    def _compute(self, predictions: Sequence[str], references: Sequence[str],
                 regexes_to_ignore: Sequence[str] | None = None, ignore_case: bool = False,
                 ignore_punctuation: bool = False, ignore_numbers: bool = False) -> dict[str, float]:
        preds = _strings(predictions, "predictions", self.name)
        refs = _strings(references, "references", self.name)
        if not preds:
            raise ValueError("exact_match: got no examples.")
        if isinstance(regexes_to_ignore, str):
            regexes_to_ignore = [regexes_to_ignore]
        for pattern in regexes_to_ignore or ():
            preds = [re.sub(pattern, "", p) for p in preds]
            refs = [re.sub(pattern, "", r) for r in refs]
        deletions = ""
        if ignore_punctuation:
            deletions += string.punctuation
        if ignore_numbers:
            deletions += string.digits
        table = str.maketrans("", "", deletions)

        def norm(text: str) -> str:
            return (text.lower() if ignore_case else text).translate(table)

        return {"exact_match": float(np.mean([norm(p) == norm(r) for p, r in zip(preds, refs)]))}


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCT = frozenset(string.punctuation)


def _f1(prediction: str, truth: str) -> float:
    pred_tokens, truth_tokens = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


class Squad(Metric):
    """SQuAD v1.1: exact_match and f1 in percent, best over each question's gold answers.

    predictions: ``[{"id": ..., "prediction_text": ...}]``;
    references: ``[{"id": ..., "answers": {"text": [...], "answer_start": [...]}}]``.
    """

    name = "squad"

    def _compute(self, predictions: Sequence[dict], references: Sequence[dict]) -> dict[str, float]:
        by_id: dict[Any, str] = {}
        for i, p in enumerate(predictions):
            if not isinstance(p, dict) or "id" not in p or "prediction_text" not in p:
                raise TypeError(f"squad: predictions[{i}] must be a dict with 'id' and 'prediction_text'.")
            by_id[p["id"]] = p["prediction_text"]
        if not references:
            raise ValueError("squad: got no references.")
        exact = f1 = 0.0
        for i, ref in enumerate(references):
            if not isinstance(ref, dict) or "id" not in ref or "answers" not in ref or "text" not in ref["answers"]:
                raise TypeError(f"squad: references[{i}] must be a dict with 'id' and 'answers': {{'text': [...]}}.")
            if ref["id"] not in by_id:
                warnings.warn(f"squad: no prediction for question id {ref['id']!r}; it scores 0.", UserWarning, stacklevel=3)
                continue
            golds = list(ref["answers"]["text"])
            pred = by_id[ref["id"]]
            if not golds:
                continue
            exact += max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
            f1 += max(_f1(pred, g) for g in golds)
        total = len(references)
        return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def _v2_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def _v2_f1(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = _v2_tokens(gold), _v2_tokens(pred)
    if not gold_tokens or not pred_tokens:  # unanswerable: right only if both are empty
        return float(gold_tokens == pred_tokens)
    common = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _best_threshold(preds: dict, scores: dict, na_probs: dict, has_ans: dict) -> tuple[float, float]:
    """Score when answers with no-answer probability above a threshold are dropped, at the best threshold."""
    current = best = sum(1 for v in has_ans.values() if not v)
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        current += scores[qid] if has_ans[qid] else (-1 if preds[qid] else 0)
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


class SquadV2(Metric):
    """SQuAD v2.0: exact / f1 (percent) with unanswerable questions, split into HasAns / NoAns,
    plus the best no-answer thresholds.

    predictions: ``[{"id", "prediction_text", "no_answer_probability"}]``; references as for ``squad``
    (an empty ``answers["text"]`` marks an unanswerable question).
    """

    name = "squad_v2"

    def _compute(self, predictions: Sequence[dict], references: Sequence[dict],
                 no_answer_threshold: float = 1.0) -> dict[str, Any]:
        preds, na_probs = {}, {}
        for i, p in enumerate(predictions):
            if not isinstance(p, dict) or not {"id", "prediction_text", "no_answer_probability"} <= set(p):
                raise TypeError(f"squad_v2: predictions[{i}] must have 'id', 'prediction_text' and 'no_answer_probability'.")
            preds[p["id"]], na_probs[p["id"]] = p["prediction_text"], float(p["no_answer_probability"])
        has_ans: dict[Any, bool] = {}
        exact_raw: dict[Any, float] = {}
        f1_raw: dict[Any, float] = {}
        for i, ref in enumerate(references):
            if not isinstance(ref, dict) or "id" not in ref or "text" not in ref.get("answers", {}):
                raise TypeError(f"squad_v2: references[{i}] must be a dict with 'id' and 'answers': {{'text': [...]}}.")
            qid, texts = ref["id"], list(ref["answers"]["text"])
            has_ans[qid] = bool(texts)
            golds = [t for t in texts if normalize_answer(t)] or [""]
            if qid not in preds:
                warnings.warn(f"squad_v2: no prediction for question id {qid!r}; it is skipped.", UserWarning, stacklevel=3)
                continue
            exact_raw[qid] = max(float(normalize_answer(g) == normalize_answer(preds[qid])) for g in golds)
            f1_raw[qid] = max(_v2_f1(g, preds[qid]) for g in golds)
        if not exact_raw:
            raise ValueError("squad_v2: no question has a prediction.")

        def thresholded(scores: dict) -> dict:
            return {q: float(not has_ans[q]) if na_probs[q] > no_answer_threshold else s for q, s in scores.items()}

        exact, f1 = thresholded(exact_raw), thresholded(f1_raw)

        def summary(qids: list) -> dict[str, Any]:
            return {"exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
                    "f1": 100.0 * sum(f1[q] for q in qids) / len(qids), "total": len(qids)}

        out = summary(list(exact))
        for prefix, flag in (("HasAns", True), ("NoAns", False)):
            qids = [q for q, v in has_ans.items() if v is flag]
            if qids:
                out.update({f"{prefix}_{k}": v for k, v in summary(qids).items()})
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(preds, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(preds, f1_raw, na_probs, has_ans)
        return out
