"""GPT-2 (also DistilGPT2 and DialoGPT checkpoints)."""
from openformers.models.gpt2.config import GPT2Config
from openformers.models.gpt2.model import (
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
)

__all__ = [
    "GPT2Config",
    "GPT2Model",
    "GPT2LMHeadModel",
    "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification",
    "GPT2ForQuestionAnswering",
    "GPT2PreTrainedModel",
]
