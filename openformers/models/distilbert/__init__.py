"""DistilBERT."""
from openformers.models.distilbert.config import DistilBertConfig
from openformers.models.distilbert.model import (
    DistilBertForMaskedLM,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    DistilBertPreTrainedModel,
)

__all__ = [
    "DistilBertConfig", "DistilBertModel", "DistilBertPreTrainedModel", "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification", "DistilBertForQuestionAnswering", "DistilBertForMaskedLM",
]
