"""Metric names -> classes, `load` and `combine`."""
from __future__ import annotations

import collections
import importlib
from typing import Any, Sequence

from .base import Metric

# name -> "module:Class"; modules are imported on first use
_METRICS: dict[str, str] = {
    "accuracy": "classification:Accuracy",
    "precision": "classification:Precision",
    "recall": "classification:Recall",
    "f1": "classification:F1",
    "matthews_correlation": "classification:MatthewsCorrelation",
    "confusion_matrix": "classification:ConfusionMatrix",
    "roc_auc": "roc_auc:RocAuc",
    "mse": "regression:MeanSquaredError",
    "mae": "regression:MeanAbsoluteError",
    "r_squared": "regression:RSquared",
    "pearsonr": "regression:PearsonR",
    "spearmanr": "regression:SpearmanR",
    "exact_match": "qa:ExactMatch",
    "squad": "qa:Squad",
    "squad_v2": "qa:SquadV2",
    "bleu": "text_overlap:Bleu",
    "sacrebleu": "text_overlap:SacreBleu",
    "chrf": "chrf:ChrF",
    "google_bleu": "text_overlap:GoogleBleu",
    "mape": "regression:MeanAbsolutePercentageError",
    "brier_score": "regression:BrierScore",
    "rouge": "rouge:Rouge",
    "wer": "error_rate:WordErrorRate",
    "cer": "error_rate:CharacterErrorRate",
    "seqeval": "seqeval:Seqeval",
    "perplexity": "perplexity:Perplexity",
    "glue": "glue:Glue",
}


def list_metrics() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_METRICS)


def _metric_class(name: str) -> type[Metric]:
    key = name.strip()
    for prefix in ("evaluate-metric/", "evaluate/"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    key = key.lower().replace("-", "_")
    if key not in _METRICS:
        raise ValueError(f"Unknown metric {name!r}. Known metrics: {', '.join(list_metrics())}.")
    module, cls = _METRICS[key].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def load(path: str, config_name: str | None = None, **kwargs: Any) -> Metric:
    """Return a metric object by name, like ``evaluate.load``.

    Args:
        path: metric name, e.g. ``"accuracy"`` or ``"evaluate-metric/accuracy"``.
        config_name: variant of the metric, e.g. ``"multilabel"`` for accuracy/f1 or
            ``"multiclass"`` for roc_auc.
        **kwargs: defaults for ``compute`` keyword arguments (hub options such as
            ``module_type``, ``cache_dir``, ``experiment_id`` are accepted and ignored).
    """
    if not isinstance(path, str):
        raise TypeError(f"load(): the metric name must be a string, got {type(path).__name__}.")
    for ignored in ("module_type", "cache_dir", "experiment_id", "keep_in_memory", "num_process",
                    "process_id", "download_config", "download_mode", "revision", "trust_remote_code"):
        kwargs.pop(ignored, None)
    return _metric_class(path)(config_name=config_name, **kwargs)


# the name `datasets` used for the same entry point
load_metric = load


class CombinedEvaluations:
    """Several metrics computed together; results merge into one dict.

    A key produced by more than one metric (or every key, with ``force_prefix``) is prefixed
    with the metric name, e.g. ``"precision_precision"``.
    """

    def __init__(self, evaluation_modules: Sequence[str | Metric], force_prefix: bool = False) -> None:
        self.evaluation_modules = [load(m) if isinstance(m, str) else m for m in evaluation_modules]
        self.force_prefix = force_prefix

    def add(self, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        for module in self.evaluation_modules:
            module.add(prediction=prediction, reference=reference, **kwargs)

    def add_batch(self, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        for module in self.evaluation_modules:
            module.add_batch(predictions=predictions, references=references, **kwargs)

    def compute(self, predictions: Any = None, references: Any = None, **kwargs: Any) -> dict[str, Any]:
        results = []
        for module in self.evaluation_modules:
            own = {k: v for k, v in kwargs.items() if k in module.accepted_kwargs()}
            result = module.compute(predictions=predictions, references=references, **own)
            results.append(result if isinstance(result, dict) else {module.name: result})
        counts = collections.Counter(k for r in results for k in r)
        merged: dict[str, Any] = {}
        for module, result in zip(self.evaluation_modules, results):
            for k, v in result.items():
                merged[f"{module.name}_{k}" if self.force_prefix or counts[k] > 1 else k] = v
        return merged


def combine(evaluations: Sequence[str | Metric] | dict[str, str | Metric], force_prefix: bool = False) -> CombinedEvaluations:
    """Combine several metrics (names or loaded objects) into one, like ``evaluate.combine``."""
    if isinstance(evaluations, dict):
        evaluations = list(evaluations.values())
    return CombinedEvaluations(list(evaluations), force_prefix=force_prefix)
