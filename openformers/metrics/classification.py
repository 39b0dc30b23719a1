"""Label classification metrics: accuracy, precision, recall, f1, matthews_correlation.

Definitions and edge cases follow scikit-learn (which the `evaluate` metrics wrap).
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from ._labels import indicator_pair, is_binary, label_pair, weights_array
from .base import Metric

_AVERAGES = (None, "binary", "micro", "macro", "weighted", "samples")


def _nonempty(n: int, metric: str) -> None:
    if n == 0:
        raise ValueError(f"{metric}: got no examples; pass at least one prediction/reference pair.")


class Accuracy(Metric):
    """Fraction (or weighted count) of predictions equal to their reference."""

    name = "accuracy"
    config_names = ("multilabel",)

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any], normalize: bool = True,
                 sample_weight: Sequence[float] | None = None) -> dict[str, float]:
        if self.config_name == "multilabel":
            y_true, y_pred = indicator_pair(predictions, references, self.name)
            correct = np.all(y_true == y_pred, axis=1).astype(np.float64)
        else:
            y_true, y_pred = label_pair(predictions, references, self.name)
            correct = (y_true == y_pred).astype(np.float64)
        _nonempty(len(correct), self.name)
        w = weights_array(sample_weight, len(correct), self.name)
        if normalize:
            score = np.average(correct, weights=w)
        else:
            score = correct.sum() if w is None else np.dot(correct, w)
        return {"accuracy": float(score)}


def _zero_division_value(zero_division: Any) -> float:
    if isinstance(zero_division, str):
        if zero_division == "warn":
            return 0.0
    elif zero_division in (0, 1):
        return float(zero_division)
    elif isinstance(zero_division, float) and np.isnan(zero_division):
        return float("nan")
    raise ValueError(f"`zero_division` must be 'warn', 0, 1 or np.nan, got {zero_division!r}.")


def _divide(num: np.ndarray, den: np.ndarray, zero_division: Any, what: str) -> np.ndarray:
    mask = den == 0
    out = np.asarray(num, dtype=np.float64) / np.where(mask, 1, den)
    if mask.any():
        out[mask] = _zero_division_value(zero_division)
        if zero_division == "warn":
            warnings.warn(f"{what} is ill-defined for labels with no samples; setting it to 0.0. "
                          "Use `zero_division` to control this.", UserWarning, stacklevel=5)
    return out


def _nan_average(values: np.ndarray, weights: np.ndarray | None) -> float:
    if values.size == 0:
        return float("nan")
    keep = ~np.isnan(values)
    if not keep.any():
        return float("nan")
    if weights is None:
        return float(np.mean(values[keep]))
    w = np.asarray(weights, dtype=np.float64)[keep]
    if w.sum() == 0:  # all weights zero: ignore them
        return float(np.mean(values[keep]))
    return float(np.average(values[keep], weights=w))


def precision_recall_f1(predictions: Sequence[Any], references: Sequence[Any], *, metric: str,
                        multilabel: bool = False, labels: Sequence[Any] | None = None, pos_label: Any = 1,
                        average: str | None = "binary", sample_weight: Sequence[float] | None = None,
                        zero_division: Any = "warn") -> tuple[Any, Any, Any]:
    """Precision, recall and F1 with scikit-learn's averaging and zero-division rules."""
    if average not in _AVERAGES:
        raise ValueError(f"{metric}: `average` must be one of {list(_AVERAGES)}, got {average!r}.")
    _zero_division_value(zero_division)
    if multilabel:
        y_true, y_pred = indicator_pair(predictions, references, metric)
        _nonempty(len(y_true), metric)
        w = weights_array(sample_weight, len(y_true), metric)
        if average == "binary":
            raise ValueError(f"{metric}: average='binary' is not valid for multilabel targets; "
                             "use 'micro', 'macro', 'weighted', 'samples' or None.")
        cols = np.arange(y_true.shape[1]) if labels is None else np.asarray(labels, dtype=np.int64)
        t, p = y_true[:, cols], y_pred[:, cols]
        if average == "samples":  # counts per row; the weights average the rows later
            tp, pred, true = (t & p).sum(axis=1), p.sum(axis=1), t.sum(axis=1)
        else:  # (weighted) counts per label column
            row_w = np.ones((len(t), 1)) if w is None else w[:, None]
            tp, pred, true = ((t & p) * row_w).sum(axis=0), (p * row_w).sum(axis=0), (t * row_w).sum(axis=0)
    else:
        if average == "samples":
            raise ValueError(f"{metric}: average='samples' needs config_name='multilabel'.")
        y_true, y_pred = label_pair(predictions, references, metric)
        _nonempty(len(y_true), metric)
        w = weights_array(sample_weight, len(y_true), metric)
        present = np.union1d(y_true, y_pred)
        if average == "binary":
            if not is_binary(y_true, y_pred):
                raise ValueError(
                    f"{metric}: targets are multiclass but average='binary'; choose one of "
                    "None, 'micro', 'macro', 'weighted'."
                )
            if pos_label not in present.tolist() and len(present) >= 2:
                raise ValueError(f"{metric}: pos_label={pos_label!r} is not a valid label; it should be one of "
                                 f"{present.tolist()}.")
            label_list = [pos_label]
        elif labels is None:
            label_list = present.tolist()
        else:
            label_list = list(labels)
        ww = np.ones(len(y_true)) if w is None else w
        tp, pred, true = (np.zeros(len(label_list)) for _ in range(3))
        for i, lab in enumerate(label_list):
            is_t, is_p = y_true == lab, y_pred == lab
            tp[i], pred[i], true[i] = ww[is_t & is_p].sum(), ww[is_p].sum(), ww[is_t].sum()
    if average == "micro":
        tp, pred, true = np.array([tp.sum()]), np.array([pred.sum()]), np.array([true.sum()])
    precision = _divide(tp, pred, zero_division, "Precision")
    recall = _divide(tp, true, zero_division, "Recall")
    f1 = _divide(2 * tp, true + pred, zero_division, "F-score")
    if average is None:
        return precision, recall, f1
    weights = true if average == "weighted" else (w if average == "samples" else None)
    return tuple(_nan_average(v, weights) for v in (precision, recall, f1))  # type: ignore[return-value]


def _scalar_or_array(value: Any) -> Any:
    arr = np.asarray(value)
    return float(arr.reshape(-1)[0]) if arr.size == 1 else arr


class _PRF(Metric):
    config_names = ("multilabel",)
    _index = 0

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any], labels: Sequence[Any] | None = None,
                 pos_label: Any = 1, average: str | None = "binary", sample_weight: Sequence[float] | None = None,
                 zero_division: Any = "warn") -> dict[str, Any]:
        scores = precision_recall_f1(
            predictions, references, metric=self.name, multilabel=self.config_name == "multilabel",
            labels=labels, pos_label=pos_label, average=average, sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {self.name: _scalar_or_array(scores[self._index])}


class Precision(_PRF):
    """Precision = TP / (TP + FP), per label or averaged."""

    name = "precision"
    _index = 0


class Recall(_PRF):
    """Recall = TP / (TP + FN), per label or averaged."""

    name = "recall"
    _index = 1


class F1(_PRF):
    """F1 = 2 TP / (2 TP + FP + FN), per label or averaged."""

    name = "f1"
    _index = 2


def _mcc(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray | None) -> float:
    classes, inverse = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    ti, pi = inverse[: len(y_true)], inverse[len(y_true):]
    k = len(classes)
    conf = np.bincount(ti * k + pi, weights=w, minlength=k * k).reshape(k, k).astype(np.float64)
    t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
    n_correct, n = np.trace(conf), p_sum.sum()
    cov_tp = n_correct * n - np.dot(t_sum, p_sum)
    cov_pp = n * n - np.dot(p_sum, p_sum)
    cov_tt = n * n - np.dot(t_sum, t_sum)
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


class MatthewsCorrelation(Metric):
    """Matthews correlation coefficient (multiclass generalisation, R_K statistic).

    With config "multilabel" it is computed per label column; ``average="macro"`` averages them.
    """

    name = "matthews_correlation"
    config_names = ("multilabel",)

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any],
                 sample_weight: Sequence[float] | None = None, average: str | None = None) -> dict[str, Any]:
        if self.config_name == "multilabel":
            y_true, y_pred = indicator_pair(predictions, references, self.name)
            _nonempty(len(y_true), self.name)
            w = weights_array(sample_weight, len(y_true), self.name)
            scores = np.array([_mcc(y_true[:, c], y_pred[:, c], w) for c in range(y_true.shape[1])])
            if average is None:
                return {"matthews_correlation": scores}
            if average != "macro":
                raise ValueError(f"matthews_correlation: `average` must be None or 'macro', got {average!r}.")
            return {"matthews_correlation": float(scores.mean())}
        if average is not None:
            raise ValueError("matthews_correlation: `average` applies only to config_name='multilabel'.")
        y_true, y_pred = label_pair(predictions, references, self.name)
        _nonempty(len(y_true), self.name)
        return {"matthews_correlation": _mcc(y_true, y_pred, weights_array(sample_weight, len(y_true), self.name))}


class ConfusionMatrix(Metric):
    """Counts C[i, j] of examples with reference ``labels[i]`` predicted as ``labels[j]``.

    ``normalize`` = "true" (rows sum to 1), "pred" (columns) or "all"; labels default to every
    label seen, sorted.
    """

    name = "confusion_matrix"

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any], labels: Sequence[Any] | None = None,
                 sample_weight: Sequence[float] | None = None, normalize: str | None = None) -> dict[str, np.ndarray]:
        if normalize not in (None, "true", "pred", "all"):
            raise ValueError(f"confusion_matrix: `normalize` must be None, 'true', 'pred' or 'all', got {normalize!r}.")
        y_true, y_pred = label_pair(predictions, references, self.name)
        _nonempty(len(y_true), self.name)
        w = weights_array(sample_weight, len(y_true), self.name)
        label_arr = np.union1d(y_true, y_pred) if labels is None else np.asarray(labels)
        if labels is not None and not np.isin(label_arr, y_true).any():
            raise ValueError("confusion_matrix: at least one of `labels` must occur in `references`.")
        index = {lab: i for i, lab in enumerate(label_arr.tolist())}
        ti = np.array([index.get(v, -1) for v in y_true.tolist()])
        pi = np.array([index.get(v, -1) for v in y_pred.tolist()])
        keep = (ti >= 0) & (pi >= 0)  # pairs with a label outside `labels` are left out
        k = len(label_arr)
        weights = None if w is None else w[keep]
        cm = np.bincount(ti[keep] * k + pi[keep], weights=weights, minlength=k * k).reshape(k, k)
        cm = cm.astype(np.int64) if w is None else cm.astype(np.float64)
        if normalize is not None:
            axis = {"true": 1, "pred": 0, "all": None}[normalize]
            with np.errstate(all="ignore"):
                cm = cm / cm.sum(axis=axis, keepdims=axis is not None)
            cm = np.nan_to_num(cm)
        return {"confusion_matrix": cm}
