"""Evaluation metrics with the `evaluate` library's API: ``load("accuracy").compute(...)``.

Every metric is implemented here on numpy (perplexity on torch); no third-party metric
package is imported.
"""
from .base import Metric
from .registry import CombinedEvaluations, combine, list_metrics, load

__all__ = ["Metric", "CombinedEvaluations", "combine", "list_metrics", "load"]
