"""RoBERTa and XLM-RoBERTa."""
from openformers.models.roberta.config import RobertaConfig, XLMRobertaConfig
from openformers.models.roberta.model import (
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaPreTrainedModel,
    XLMRobertaForMaskedLM,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaModel,
    XLMRobertaPreTrainedModel,
)

__all__ = [
    "RobertaConfig", "RobertaModel", "RobertaPreTrainedModel", "RobertaForSequenceClassification",
    "RobertaForTokenClassification", "RobertaForQuestionAnswering", "RobertaForMaskedLM",
    "XLMRobertaConfig", "XLMRobertaModel", "XLMRobertaPreTrainedModel", "XLMRobertaForSequenceClassification",
    "XLMRobertaForTokenClassification", "XLMRobertaForQuestionAnswering", "XLMRobertaForMaskedLM",
]
