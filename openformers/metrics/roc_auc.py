"""Area under the ROC curve: binary, multiclass (one-vs-rest / one-vs-one) and multilabel."""
from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

import numpy as np

from .base import Metric


def roc_curve(y_true: np.ndarray, y_score: np.ndarray, sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score threshold (plus the origin)."""
    order = np.argsort(y_score, kind="mergesort")[::-1]
    score, truth = y_score[order], y_true[order].astype(np.float64)
    w = np.ones_like(truth) if sample_weight is None else sample_weight[order]
    # last index of each run of equal scores
    cut = np.r_[np.where(np.diff(score))[0], truth.size - 1]
    tps = np.cumsum(truth * w)[cut]
    fps = np.cumsum((1 - truth) * w)[cut]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1]


def binary_auc(y_true: np.ndarray, y_score: np.ndarray, sample_weight: np.ndarray | None = None,
               max_fpr: float | None = None) -> float:
    """ROC AUC of 0/1 targets; with ``max_fpr`` the McClish-standardised partial AUC."""
    if len(np.unique(y_true)) != 2:
        raise ValueError("roc_auc: only one class is present in `references`; ROC AUC is not defined then.")
    fpr, tpr = roc_curve(y_true, y_score, sample_weight)
    if max_fpr is None or max_fpr == 1:
        return float(np.trapezoid(tpr, fpr))
    if not 0 < max_fpr <= 1:
        raise ValueError(f"roc_auc: `max_fpr` must be in (0, 1], got {max_fpr!r}.")
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    y_at = np.interp(max_fpr, fpr[stop - 1: stop + 1], tpr[stop - 1: stop + 1])
    partial = np.trapezoid(np.r_[tpr[:stop], y_at], np.r_[fpr[:stop], max_fpr])
    min_area, max_area = 0.5 * max_fpr**2, max_fpr
    return float(0.5 * (1 + (partial - min_area) / (max_area - min_area)))


def _numeric(values: Any, name: str, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"roc_auc: `{name}` must be numeric (0/1 or integer class ids for references, "
                        f"floats for prediction_scores); got dtype {arr.dtype}.")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"roc_auc: `{name}` must be {ndim}-D for this config, got shape {arr.shape}.")
    return arr


def _average_columns(y_true: np.ndarray, y_score: np.ndarray, average: str | None,
                     w: np.ndarray | None) -> Any:
    """Per-column binary AUCs combined like scikit-learn's ``_average_binary_score``."""
    if average == "micro":
        ww = None if w is None else np.repeat(w, y_true.shape[1])
        return binary_auc(y_true.ravel(), y_score.ravel(), ww)
    if average == "samples":
        scores = np.array([binary_auc(y_true[i], y_score[i]) for i in range(len(y_true))])
        return float(np.average(scores, weights=w))
    scores = []
    for c in range(y_true.shape[1]):
        if len(np.unique(y_true[:, c])) != 2:
            raise ValueError(f"roc_auc: class/label column {c} is always or never the true label in `references`, "
                             "so its ROC AUC is undefined; drop that class or add examples of it.")
        scores.append(binary_auc(y_true[:, c], y_score[:, c], w))
    scores = np.array(scores)
    if average is None:
        return scores
    weights = None
    if average == "weighted":
        weights = (y_true * (1.0 if w is None else w[:, None])).sum(axis=0)
        if np.isclose(weights.sum(), 0.0):
            return 0.0
    return float(np.average(scores, weights=weights))


class RocAuc(Metric):
    """ROC AUC from ``prediction_scores``; configs "multiclass" and "multilabel"."""

    name = "roc_auc"
    input_names = ("prediction_scores", "references")
    config_names = ("multiclass", "multilabel")

    def add(self, *, prediction_scores: Any = None, reference: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        if "prediction_score" in kwargs:
            prediction_scores = kwargs.pop("prediction_score")
        if prediction_scores is None or reference is None:
            raise ValueError("roc_auc.add() needs `prediction_scores=` (or `prediction_score=`) and `reference=`.")
        self._buffer["prediction_scores"].append(prediction_scores)
        self._buffer["references"].append(reference)

    def _compute(self, prediction_scores: Sequence[Any], references: Sequence[Any], average: str | None = "macro",
                 sample_weight: Sequence[float] | None = None, max_fpr: float | None = None,
                 multi_class: str = "raise", labels: Sequence[Any] | None = None) -> dict[str, Any]:
        if average not in (None, "micro", "macro", "weighted", "samples"):
            raise ValueError(f"roc_auc: `average` must be None, 'micro', 'macro', 'weighted' or 'samples', got {average!r}.")
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if self.config_name == "multilabel":
            y_true = _numeric(references, "references", 2)
            y_score = _numeric(prediction_scores, "prediction_scores", 2)
            if y_true.shape != y_score.shape:
                raise ValueError(f"roc_auc: references {y_true.shape} and prediction_scores {y_score.shape} differ in shape.")
            return {"roc_auc": _average_columns(y_true, y_score.astype(np.float64), average, w)}
        if self.config_name == "multiclass":
            return {"roc_auc": self._multiclass(prediction_scores, references, average, w, max_fpr, multi_class, labels)}
        y_true = _numeric(references, "references", 1)
        y_score = _numeric(prediction_scores, "prediction_scores", 1).astype(np.float64)
        classes = np.unique(y_true)
        if len(classes) > 2:
            raise ValueError("roc_auc: references have more than two classes; load('roc_auc', 'multiclass') "
                             "and pass per-class prediction_scores.")
        positive = (y_true == classes[-1]).astype(np.int64)
        return {"roc_auc": binary_auc(positive, y_score, w, max_fpr)}

    @staticmethod
    def _multiclass(prediction_scores: Any, references: Any, average: str | None, w: np.ndarray | None,
                    max_fpr: float | None, multi_class: str, labels: Sequence[Any] | None) -> Any:
        y_true = _numeric(references, "references", 1)
        y_score = _numeric(prediction_scores, "prediction_scores", 2).astype(np.float64)
        if max_fpr is not None and max_fpr != 1:
            raise ValueError("roc_auc: partial AUC (`max_fpr`) is only defined for binary targets.")
        if multi_class not in ("ovr", "ovo"):
            raise ValueError("roc_auc (multiclass): pass multi_class='ovr' or 'ovo'.")
        if not np.allclose(1, y_score.sum(axis=1)):
            raise ValueError("roc_auc (multiclass): prediction_scores must be probabilities summing to 1 per row.")
        classes = np.unique(y_true) if labels is None else np.asarray(labels)
        if labels is not None and (len(np.unique(classes)) != len(classes) or np.any(classes[:-1] > classes[1:])):
            raise ValueError("roc_auc (multiclass): `labels` must be unique and sorted.")
        if len(classes) != y_score.shape[1]:
            raise ValueError(f"roc_auc (multiclass): {len(classes)} classes in references but prediction_scores "
                             f"has {y_score.shape[1]} columns; pass `labels` listing every class.")
        if not np.isin(y_true, classes).all():
            raise ValueError("roc_auc (multiclass): references contain labels missing from `labels`.")
        if multi_class == "ovr":
            if average not in ("macro", "weighted", None, "micro"):
                raise ValueError("roc_auc (multiclass ovr): `average` must be 'macro', 'weighted', 'micro' or None.")
            onehot = (y_true[:, None] == classes[None, :]).astype(np.int64)
            return _average_columns(onehot, y_score, average, w)
        if average not in ("macro", "weighted"):
            raise ValueError("roc_auc (multiclass ovo): `average` must be 'macro' or 'weighted'.")
        if w is not None:
            raise ValueError("roc_auc (multiclass ovo): `sample_weight` is not supported; use multi_class='ovr'.")
        pair_scores, prevalence = [], []
        for a, b in combinations(range(len(classes)), 2):
            mask = (y_true == classes[a]) | (y_true == classes[b])
            a_true = (y_true[mask] == classes[a]).astype(np.int64)
            score_a = binary_auc(a_true, y_score[mask, a])
            score_b = binary_auc(1 - a_true, y_score[mask, b])
            pair_scores.append((score_a + score_b) / 2)
            prevalence.append(mask.mean())
        return float(np.average(pair_scores, weights=prevalence if average == "weighted" else None))
