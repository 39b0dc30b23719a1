"""Input checking shared by the classification metrics: label arrays, weights, target types."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def label_array(values: Sequence[Any], name: str, metric: str) -> np.ndarray:
    """A 1-D array of class labels (ints, bools, integral floats or strings).

    Non-integral floats (scores, probabilities) are rejected: a classification metric
    needs class ids, so the caller should argmax or threshold first.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(
            f"{metric}: `{name}` must be a flat list of class labels, got shape {arr.shape}; "
            "use config_name='multilabel' for label-indicator rows."
        )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise TypeError(
                f"{metric}: `{name}` contains non-integer floats; it expects class labels "
                "(ints or strings). Convert scores to labels first (e.g. argmax or a threshold)."
            )
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "O":
        raise TypeError(f"{metric}: `{name}` mixes label types; use all ints or all strings.")
    elif arr.dtype.kind not in "iuU":
        raise TypeError(f"{metric}: `{name}` has unsupported dtype {arr.dtype}; use ints or strings.")
    return arr


def label_pair(predictions: Sequence[Any], references: Sequence[Any], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked (y_true, y_pred) arrays with a common label type."""
    y_true = label_array(references, "references", metric)
    y_pred = label_array(predictions, "predictions", metric)
    if len(y_true) and len(y_pred) and (y_true.dtype.kind == "U") != (y_pred.dtype.kind == "U"):
        raise TypeError(
            f"{metric}: `predictions` and `references` mix string and integer labels; use one type."
        )
    return y_true, y_pred


def indicator_pair(predictions: Sequence[Any], references: Sequence[Any], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked 2-D 0/1 label-indicator matrices for multilabel configs."""
    out = []
    for values, name in ((references, "references"), (predictions, "predictions")):
        arr = np.asarray(values)
        if arr.ndim != 2:
            raise ValueError(f"{metric} (multilabel): `{name}` must be rows of 0/1 indicators, got shape {arr.shape}.")
        if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
            raise TypeError(f"{metric} (multilabel): `{name}` must contain only 0 and 1.")
        out.append(arr.astype(np.int64))
    if out[0].shape != out[1].shape:
        raise ValueError(f"{metric} (multilabel): shapes differ: references {out[0].shape}, predictions {out[1].shape}.")
    return out[0], out[1]


def weights_array(sample_weight: Sequence[float] | None, n: int, metric: str) -> np.ndarray | None:
    """``sample_weight`` as a float array of length ``n`` (or None)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim != 1 or len(w) != n:
        raise ValueError(f"{metric}: `sample_weight` must have one weight per example ({n}), got shape {w.shape}.")
    return w


def is_binary(y_true: np.ndarray, y_pred: np.ndarray) -> bool:
    """scikit-learn's rule: a 1-D target is binary when at most two distinct labels occur."""
    return len(np.union1d(y_true, y_pred)) <= 2
