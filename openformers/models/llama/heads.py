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
from openformers.modules.heads import (
    last_token_index,
    question_answering_loss,
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
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
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
        logits = self.score(outputs.last_hidden_state)
        batch_size, seq_len = logits.shape[:2]
        pad = self.config.pad_token_id
        if pad is None and batch_size != 1:
            raise ValueError(
                f"{type(self).__name__} needs config.pad_token_id to find the last token of each row in a batch of "
                f"{batch_size}; set it (e.g. model.config.pad_token_id = tokenizer.pad_token_id)"
            )
        last = last_token_index(input_ids, pad, batch_size, seq_len, logits.device)
        pooled = logits[torch.arange(batch_size, device=logits.device), last]
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
        if getattr(config, "classifier_dropout", None) is not None:
            dropout = config.classifier_dropout
        elif getattr(config, "hidden_dropout", None) is not None:
            dropout = config.hidden_dropout
        else:
            dropout = 0.1
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=getattr(config, "token_classification_bias", True))
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
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
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
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        out = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return _finish(self, out, return_dict)
