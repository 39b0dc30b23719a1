"""BERT."""
from openformers.models.bert.config import BertConfig
from openformers.models.bert.model import (
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertPreTrainedModel,
)

__all__ = [
    "BertConfig", "BertModel", "BertPreTrainedModel", "BertForSequenceClassification",
    "BertForTokenClassification", "BertForQuestionAnswering", "BertForMaskedLM",
]
