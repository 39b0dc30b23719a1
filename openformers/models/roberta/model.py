"""RoBERTa and XLM-RoBERTa: BERT's encoder with padding-aware positions and RoBERTa's heads.

Only what differs from BERT lives here: position ids counted from ``padding_idx + 1`` (pads keep
``padding_idx``), the ``lm_head`` and the ``classifier.dense`` / ``classifier.out_proj`` head.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from openformers.core.outputs import MaskedLMOutput, SequenceClassifierOutput
from openformers.models.bert.model import (
    BertEmbeddings,
    BertForQuestionAnswering,
    BertForTokenClassification,
    BertModel,
    BertPreTrainedModel,
    _encode,
    _inputs,
    _finish,
)
from openformers.models.roberta.config import RobertaConfig, XLMRobertaConfig
from openformers.modules.dense import Linear
from openformers.modules.heads import classifier_dropout, masked_lm_loss, sequence_classification_loss


def position_ids_from_input_ids(input_ids: torch.Tensor, padding_idx: int, past_length: int = 0) -> torch.Tensor:
    """Real tokens get padding_idx + 1, + 2, ... in order; pad tokens keep padding_idx."""
    keep = input_ids.ne(padding_idx).int()
    return ((torch.cumsum(keep, dim=1).type_as(keep) + past_length) * keep).long() + padding_idx


class RobertaEmbeddings(BertEmbeddings):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id

    @staticmethod
    def _position_padding_idx(config: RobertaConfig) -> int | None:
        return config.pad_token_id

    def make_position_ids(
        self, input_ids: torch.Tensor | None, seq_len: int, device: torch.device, past_length: int = 0
    ) -> torch.Tensor:
        if input_ids is not None:
            return position_ids_from_input_ids(input_ids, self.padding_idx, past_length)
        # from embeddings the pads cannot be told apart: count from padding_idx + 1
        start = self.padding_idx + 1 + past_length
        return torch.arange(start, start + seq_len, device=device)[None, :]


class RobertaPreTrainedModel(BertPreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"
    _no_split_modules = ("BertLayer",)
    _keys_to_ignore_on_load_unexpected = (r"embeddings\.position_ids$", r"pooler")


class RobertaModel(RobertaPreTrainedModel, BertModel):
    """BertModel with RoBERTa's embeddings."""

    embeddings_class = RobertaEmbeddings


class RobertaClassificationHead(nn.Module):
    """<s> token -> dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(classifier_dropout(config, config.hidden_dropout_prob))
        self.out_proj = Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


class RobertaForSequenceClassification(RobertaPreTrainedModel):
    encoder_reads: ClassVar[str] = "first"  # the classification head reads the first position alone

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.roberta, _inputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_attentions, output_hidden_states,
            return_dict))
        logits = self.classifier(out.last_hidden_state)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return _finish(SequenceClassifierOutput, return_dict, loss, out, logits=logits)


class RobertaForTokenClassification(RobertaPreTrainedModel, BertForTokenClassification):
    """BERT's token-classification head on ``roberta``."""

    def __init__(self, config: RobertaConfig) -> None:
        RobertaPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(classifier_dropout(config, config.hidden_dropout_prob))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()


class RobertaForQuestionAnswering(RobertaPreTrainedModel, BertForQuestionAnswering):
    """BERT's span head (``qa_outputs``) on ``roberta``."""

    def __init__(self, config: RobertaConfig) -> None:
        RobertaPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()


class RobertaLMHead(nn.Module):
    """dense -> gelu -> layer_norm -> decoder (tied to the word embeddings; bias is ``lm_head.bias``)."""

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = Linear(config.hidden_size, config.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(x))))


class RobertaForMaskedLM(RobertaPreTrainedModel):
    _tied_weights_keys = {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight"}
    checkpoint_rules = ((r"^lm_head\.bias$", "lm_head.decoder.bias"),)
    save_rules = ((r"^lm_head\.decoder\.bias$", "lm_head.bias"),)

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head.decoder = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.roberta, _inputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_attentions, output_hidden_states,
            return_dict))
        logits = self.lm_head(out.last_hidden_state)
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return _finish(MaskedLMOutput, return_dict, loss, out, logits=logits)


# XLM-RoBERTa is RoBERTa with its own model_type: subclasses that only swap the config class.
class XLMRobertaPreTrainedModel(RobertaPreTrainedModel):
    config_class = XLMRobertaConfig


class XLMRobertaModel(RobertaModel):
    config_class = XLMRobertaConfig


class XLMRobertaForSequenceClassification(RobertaForSequenceClassification):
    config_class = XLMRobertaConfig


class XLMRobertaForTokenClassification(RobertaForTokenClassification):
    config_class = XLMRobertaConfig


class XLMRobertaForQuestionAnswering(RobertaForQuestionAnswering):
    config_class = XLMRobertaConfig


class XLMRobertaForMaskedLM(RobertaForMaskedLM):
    config_class = XLMRobertaConfig
