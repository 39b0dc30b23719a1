"""Evaluation metrics with the `evaluate` library's API: ``load("accuracy").compute(...)``.

Every metric is implemented here on numpy (perplexity on torch); no third-party metric
package is imported. Outputs have the `evaluate` keys; like `evaluate`, ``wer``, ``cer`` and
``r_squared`` return a bare float.

    >>> from openformers.metrics import load, combine
    >>> load("accuracy").compute(predictions=[0, 1], references=[0, 0])
    {'accuracy': 0.5}
    >>> combine(["precision", "recall"]).compute(predictions=[0, 1], references=[1, 1])
    {'precision': 1.0, 'recall': 0.5}
"""
from .base import Metric
from .registry import CombinedEvaluations, combine, list_metrics, load, load_metric

# the names `evaluate` uses for the same things
EvaluationModule = Metric
list_evaluation_modules = list_metrics

__all__ = ["Metric", "EvaluationModule", "CombinedEvaluations", "combine", "list_metrics",
           "list_evaluation_modules", "load", "load_metric"]
