"""Task heads of the Llama family: sequence classification, token classification, extractive QA."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from openformers.core.outputs import (
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from openformers.models.llama.config import LlamaConfig
from openformers.models.llama.model import LlamaModel, LlamaPreTrainedModel, _base_kwargs, _finish
from openformers.modules.cache import Cache
from openformers.modules.dense import Linear
from openformers.modules.heads import (
    classifier_dropout,
    pool_last_token,
    question_answering_logits,
    sequence_classification_loss,
    token_classification_loss,
)


class LlamaForSequenceClassification(LlamaPreTrainedModel):
    """Sequence classification from the hidden state of each row's last non-pad token."""

    base_model_class: ClassVar[type[LlamaModel]] = LlamaModel

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = self.base_model_class(config)
        self.score = Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | tuple | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutputWithPast | tuple:
        outputs = self.model(
            input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
            output_attentions, output_hidden_states, cache_position=cache_position, **_base_kwargs(self, kwargs),
        )
        pooled = pool_last_token(self.score(outputs.last_hidden_state), input_ids, self.config, type(self).__name__)
        loss = sequence_classification_loss(pooled, labels, self.config) if labels is not None else None
        out = SequenceClassifierOutputWithPast(
            loss=loss, logits=pooled, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return _finish(self, out, return_dict)


class LlamaForTokenClassification(LlamaPreTrainedModel):
    """Per-token classification head (``score``) over the decoder's hidden states."""

    base_model_class: ClassVar[type[LlamaModel]] = LlamaModel

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = self.base_model_class(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.score = Linear(config.hidden_size, config.num_labels, bias=getattr(config, "token_classification_bias", True))
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | tuple | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput | tuple:
        outputs = self.model(
            input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
            output_attentions, output_hidden_states, cache_position=cache_position, **_base_kwargs(self, kwargs),
        )
        logits = self.score(self.dropout(outputs.last_hidden_state))
        loss = token_classification_loss(logits, labels) if labels is not None else None
        out = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return _finish(self, out, return_dict)


class LlamaForQuestionAnswering(LlamaPreTrainedModel):
    """Extractive question answering (``qa_outputs`` gives start and end logits).

    The base model lives under ``transformer`` as in transformers; checkpoints of the other
    heads (``model.``) load too.
    """

    base_model_class: ClassVar[type[LlamaModel]] = LlamaModel
    base_model_prefix = "transformer"
    checkpoint_rules = ((r"^model\.", "transformer."),)

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.base_model_class(config))
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | tuple | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput | tuple:
        outputs = self.base_model(
            input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, False,
            output_attentions, output_hidden_states, cache_position=cache_position, **_base_kwargs(self, kwargs),
        )
        loss, start_logits, end_logits = question_answering_logits(
            self.qa_outputs(outputs.last_hidden_state), start_positions, end_positions)
        out = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return _finish(self, out, return_dict)
