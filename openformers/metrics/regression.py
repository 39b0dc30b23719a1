"""Regression and correlation metrics: mse, mae, r_squared, pearsonr, spearmanr."""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from ._special import betainc
from .base import Metric


def _values(values: Any, name: str, metric: str, multilist: bool) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{metric}: `{name}` must be numbers, got dtype {arr.dtype}.")
    if arr.size == 0:
        raise ValueError(f"{metric}: got no examples; pass at least one prediction/reference pair.")
    if arr.ndim != (2 if multilist else 1):
        hint = "lists of numbers per example need config_name='multilist'" if arr.ndim == 2 else "expected a flat list"
        raise ValueError(f"{metric}: `{name}` has shape {arr.shape}; {hint}.")
    return arr.astype(np.float64)


def _error(metric: Metric, predictions: Any, references: Any, sample_weight: Any, multioutput: Any,
           transform: Any, root: bool = False) -> Any:
    multilist = metric.config_name == "multilist"
    y_pred = _values(predictions, "predictions", metric.name, multilist)
    y_true = _values(references, "references", metric.name, multilist)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"{metric.name}: predictions {y_pred.shape} and references {y_true.shape} differ in shape.")
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    per_output = np.average(transform(y_true - y_pred), axis=0, weights=w)
    if root:
        per_output = np.sqrt(per_output)
    if isinstance(multioutput, str):
        if multioutput == "raw_values":
            return per_output
        if multioutput != "uniform_average":
            raise ValueError(f"{metric.name}: `multioutput` must be 'raw_values', 'uniform_average' or weights.")
        return float(np.average(per_output))
    return float(np.average(per_output, weights=np.asarray(multioutput, dtype=np.float64)))


class MeanSquaredError(Metric):
    """Mean squared error (root mean squared error with ``squared=False``)."""

    name = "mse"
    config_names = ("multilist",)

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any], sample_weight: Any = None,
                 multioutput: Any = "uniform_average", squared: bool = True) -> dict[str, Any]:
        return {"mse": _error(self, predictions, references, sample_weight, multioutput, np.square, root=not squared)}


class MeanAbsoluteError(Metric):
    """Mean absolute error."""

    name = "mae"
    config_names = ("multilist",)

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any], sample_weight: Any = None,
                 multioutput: Any = "uniform_average") -> dict[str, Any]:
        return {"mae": _error(self, predictions, references, sample_weight, multioutput, np.abs)}


class MeanAbsolutePercentageError(Metric):
    """Mean of |prediction - reference| / max(|reference|, machine epsilon) (a fraction, not percent)."""

    name = "mape"
    config_names = ("multilist",)

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any], sample_weight: Any = None,
                 multioutput: Any = "uniform_average") -> dict[str, Any]:
        refs = _values(references, "references", self.name, self.config_name == "multilist")
        scale = np.maximum(np.abs(refs), np.finfo(np.float64).eps)
        # _error subtracts inside; dividing by the reference scale makes it the percentage error
        return {"mape": _error(self, predictions, references, sample_weight, multioutput, lambda d: np.abs(d) / scale)}


class BrierScore(Metric):
    """Mean squared difference between predicted probabilities and the 0/1 outcome (``pos_label``)."""

    name = "brier_score"

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any], sample_weight: Any = None,
                 pos_label: Any = 1) -> dict[str, float]:
        prob = _values(predictions, "predictions", self.name, False)
        if np.any(prob < 0) or np.any(prob > 1):
            raise ValueError("brier_score: `predictions` must be probabilities in [0, 1].")
        refs = np.asarray(references)
        if len(np.unique(refs)) > 2:
            raise ValueError("brier_score: `references` must be binary (two classes at most).")
        outcome = (refs == pos_label).astype(np.float64)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return {"brier_score": float(np.average((outcome - prob) ** 2, weights=w))}


class RSquared(Metric):
    """Coefficient of determination 1 - SS_res / SS_tot.

    Like the `evaluate` metric of the same name, ``compute`` returns a plain float.
    """

    name = "r_squared"

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any]) -> float:
        y_pred = _values(predictions, "predictions", self.name, False)
        y_true = _values(references, "references", self.name, False)
        ss_tot = np.sum((y_true - y_true.mean()) ** 2)
        if ss_tot == 0:
            raise ValueError("r_squared: references are constant, so R^2 is undefined.")
        return float(1 - np.sum((y_true - y_pred) ** 2) / ss_tot)


def _correlation(x: np.ndarray, y: np.ndarray, metric: str) -> float:
    if len(x) < 2:
        raise ValueError(f"{metric}: needs at least two examples.")
    if np.all(x == x[0]) or np.all(y == y[0]):
        warnings.warn(f"{metric}: an input is constant; the correlation is undefined (nan).", UserWarning, stacklevel=4)
        return float("nan")
    xm, ym = x - x.mean(), y - y.mean()
    # scale by the largest deviation before taking norms (overflow-safe; same rounding as scipy)
    x_max, y_max = np.abs(xm).max(), np.abs(ym).max()
    nx = x_max * np.sqrt(np.sum((xm / x_max) ** 2))
    ny = y_max * np.sqrt(np.sum((ym / y_max) ** 2))
    vecdot = getattr(np, "vecdot", None)
    r = vecdot(xm / nx, ym / ny) if vecdot is not None else np.sum((xm / nx) * (ym / ny))
    return float(np.clip(r, -1.0, 1.0))


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties get the average of their ranks."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, len(a)])
    avg = first + (counts + 1) / 2.0
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


class PearsonR(Metric):
    """Pearson correlation; ``return_pvalue=True`` adds the two-sided p-value under "p-value"."""

    name = "pearsonr"

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any],
                 return_pvalue: bool = False) -> dict[str, float]:
        x = _values(references, "references", self.name, False)
        y = _values(predictions, "predictions", self.name, False)
        r = _correlation(x, y, self.name)
        if not return_pvalue:
            return {"pearsonr": r}
        n = len(x)
        if np.isnan(r):
            p = float("nan")
        elif n == 2:
            p = 1.0
        else:
            # |r| ~ Beta(n/2 - 1, n/2 - 1) on [-1, 1]; 1 - (|r| + 1) / 2 rounds like scipy near |r| = 1
            half = n / 2 - 1
            p = min(1.0, 2 * betainc(half, half, 1.0 - (abs(r) + 1.0) / 2.0))
        return {"pearsonr": r, "p-value": p}


class SpearmanR(Metric):
    """Spearman rank correlation; ``return_pvalue=True`` adds "spearmanr_pvalue"."""

    name = "spearmanr"

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any],
                 return_pvalue: bool = False) -> dict[str, float]:
        x = _values(predictions, "predictions", self.name, False)
        y = _values(references, "references", self.name, False)
        rx, ry = rankdata(x), rankdata(y)
        rho = _correlation(rx, ry, self.name)  # validates size, warns on constant input
        if not np.isnan(rho):  # np.corrcoef's rounding, as scipy (matters for p-values near |rho| = 1)
            rho = float(np.clip(np.corrcoef(rx, ry)[0, 1], -1.0, 1.0))
        if not return_pvalue:
            return {"spearmanr": rho}
        dof = len(x) - 2
        if np.isnan(rho) or dof <= 0:
            p = float("nan")
        else:
            # two-sided t test, t = rho * sqrt(dof / ((1 + rho)(1 - rho))), P = I_{dof/(dof+t^2)}(dof/2, 1/2)
            denom = (rho + 1.0) * (1.0 - rho)
            t2 = math.inf if denom <= 0 else rho * rho * (dof / denom)
            p = 0.0 if math.isinf(t2) else betainc(dof / 2, 0.5, dof / (dof + t2))
        return {"spearmanr": rho, "spearmanr_pvalue": p}
