"""The GLUE benchmark metric: each task's official scores, by config name (``load("glue", "mrpc")``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import Metric
from .classification import _mcc, precision_recall_f1
from .regression import _correlation, rankdata

_TASKS = ("sst2", "mnli", "mnli_mismatched", "mnli_matched", "cola", "stsb", "mrpc", "qqp", "qnli", "rte", "wnli", "hans")


class Glue(Metric):
    """cola: matthews_correlation; stsb: pearson and spearmanr; mrpc / qqp: accuracy and f1;
    every other task: accuracy."""

    name = "glue"
    config_names = _TASKS

    def __init__(self, config_name: str | None = None, **kwargs: Any) -> None:
        if config_name in (None, "default"):
            raise ValueError(f"glue: pass a task as config_name, one of {list(_TASKS)}.")
        super().__init__(config_name, **kwargs)

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        if not len(predictions):
            raise ValueError("glue: got no examples.")
        if self.config_name == "stsb":
            x, y = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
            return {"pearson": _correlation(x, y, "glue"), "spearmanr": _correlation(rankdata(x), rankdata(y), "glue")}
        preds, refs = np.asarray(predictions), np.asarray(references)
        if self.config_name == "cola":
            return {"matthews_correlation": _mcc(refs, preds, None)}
        out = {"accuracy": float((preds == refs).mean())}
        if self.config_name in ("mrpc", "qqp"):
            out["f1"] = precision_recall_f1(predictions, references, metric="glue", average="binary")[2]
        return out
