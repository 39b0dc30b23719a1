"""DistilBERT: BERT's encoder stack with DistilBERT's parameter names and heads.

The layer stack (hidden-state and attention collection, gradient checkpointing) is BERT's
``BertEncoder``; only the block and the embeddings, whose names differ, are defined here.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from openformers.core.modeling import PreTrainedModel
from openformers.core.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from openformers.models.bert.model import (
    BertEncoder,
    _encode,
    _finish,
    embedding,
    get_activation,
    resolve_flags,
)
from openformers.models.distilbert.config import DistilBertConfig
from openformers.modules.attention import get_attention_backend
from openformers.modules.dense import Linear
from openformers.modules.encoder_blocks import EncoderBlocks, EncoderDropouts, EncoderStack
from openformers.modules.heads import (
    masked_lm_loss,
    question_answering_logits,
    sequence_classification_loss,
    token_classification_loss,
)
from openformers.modules.masks import padding_mask


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """[n_pos, dim]: sin on even columns, cos on odd ones (DistilBERT's fixed positions)."""
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    out = torch.empty(n_pos, dim, dtype=torch.float64)
    out[:, 0::2] = torch.sin(angle[:, 0::2])
    out[:, 1::2] = torch.cos(angle[:, 1::2])
    return out.float()


class Embeddings(nn.Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.word_embeddings = embedding(config.vocab_size, config.dim, config.pad_token_id)
        self.position_embeddings = embedding(config.max_position_embeddings, config.dim)
        if config.sinusoidal_pos_embds:
            self.position_embeddings.weight.requires_grad_(False)
        self.LayerNorm = nn.LayerNorm(config.dim, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)
        return self.dropout(self.LayerNorm(inputs_embeds + self.position_embeddings(positions)))


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.dim // config.n_heads
        self.q_lin = Linear(config.dim, config.dim)
        self.k_lin = Linear(config.dim, config.dim)
        self.v_lin = Linear(config.dim, config.dim)
        self.out_lin = Linear(config.dim, config.dim)
        self.dropout_prob = config.attention_dropout
        self.config = config

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False):
        b, s, _ = x.shape
        # [b, s, dim] -> [b, heads, s, head_dim]
        q = self.q_lin(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_lin(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v_lin(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        attend = get_attention_backend(self.config.attn_implementation)
        out, weights = attend(
            q, k, v, mask, 1.0 / math.sqrt(self.head_dim), self.dropout_prob,
            output_attentions=output_attentions, training=self.training,
        )
        return self.out_lin(out.reshape(b, s, -1)), weights


class FFN(nn.Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.lin1 = Linear(config.dim, config.hidden_dim)
        self.lin2 = Linear(config.hidden_dim, config.dim)
        self.activation = get_activation(config.activation)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.activation(self.lin1(x))))


class TransformerBlock(nn.Module):
    """Post-norm block: LN(x + attn(x)), then LN(. + ffn(.))."""

    # what forward is made of, for the runtime (modules/encoder_blocks.py)
    blocks: ClassVar[EncoderBlocks] = EncoderBlocks(
        q="attention.q_lin", k="attention.k_lin", v="attention.v_lin", attention_out="attention.out_lin",
        attention_norm="sa_layer_norm", mlp_in="ffn.lin1", mlp_out="ffn.lin2", mlp_norm="output_layer_norm",
        heads="n_heads", activation="activation",
        dropouts=EncoderDropouts(attention="attention.dropout_prob", attention_out=None, mlp_out="ffn.dropout"),
    )

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)
        self.ffn = FFN(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False):
        attn, weights = self.attention(x, mask, output_attentions)
        x = self.sa_layer_norm(attn + x)
        return self.output_layer_norm(self.ffn(x) + x), weights


class DistilBertPreTrainedModel(PreTrainedModel):
    config_class = DistilBertConfig
    base_model_prefix = "distilbert"
    _no_split_modules = ("TransformerBlock",)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Embeddings) and self.config.sinusoidal_pos_embds:
            with torch.no_grad():
                module.position_embeddings.weight.copy_(
                    sinusoidal_table(self.config.max_position_embeddings, self.config.dim)
                )


class DistilBertModel(DistilBertPreTrainedModel):
    """The bare encoder: ``last_hidden_state`` (no pooler)."""

    encoder_stack: ClassVar[EncoderStack] = EncoderStack(layers="transformer.layer")

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.transformer = BertEncoder(config, layer_class=TransformerBlock, n_layers=config.n_layers)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        output_attentions, output_hidden_states, return_dict = resolve_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embeddings(input_ids, inputs_embeds)
        mask = padding_mask(attention_mask, x.dtype)
        x, hidden_states, attentions = self.transformer(x, mask, output_hidden_states, output_attentions)
        if not return_dict:
            return tuple(v for v in (x, hidden_states, attentions) if v is not None)
        return BaseModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions)


def _base_kwargs(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states,
                 return_dict) -> dict[str, Any]:
    return dict(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=return_dict)


class DistilBertForSequenceClassification(DistilBertPreTrainedModel):
    """First token -> pre_classifier -> ReLU -> dropout -> classifier."""

    encoder_reads: ClassVar[str] = "first"

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = Linear(config.dim, config.dim)
        self.classifier = Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.distilbert, _base_kwargs(
            input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states, return_dict))
        x = torch.relu(self.pre_classifier(out.last_hidden_state[:, 0]))
        logits = self.classifier(self.dropout(x))
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return _finish(SequenceClassifierOutput, return_dict, loss, out, logits=logits)


class DistilBertForTokenClassification(DistilBertPreTrainedModel):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.distilbert = DistilBertModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = Linear(config.dim, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.distilbert, _base_kwargs(
            input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states, return_dict))
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = token_classification_loss(logits, labels) if labels is not None else None
        return _finish(TokenClassifierOutput, return_dict, loss, out, logits=logits)


class DistilBertForQuestionAnswering(DistilBertPreTrainedModel):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(f"question answering needs num_labels=2 (start and end), got {config.num_labels}")
        self.distilbert = DistilBertModel(config)
        self.qa_outputs = Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.qa_dropout)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, start_positions=None, end_positions=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.distilbert, _base_kwargs(
            input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states, return_dict))
        loss, start_logits, end_logits = question_answering_logits(
            self.qa_outputs(self.dropout(out.last_hidden_state)), start_positions, end_positions)
        return _finish(QuestionAnsweringModelOutput, return_dict, loss, out, start_logits=start_logits, end_logits=end_logits)


class DistilBertForMaskedLM(DistilBertPreTrainedModel):
    """vocab_transform -> activation -> vocab_layer_norm -> vocab_projector (tied to the word embeddings)."""

    _tied_weights_keys = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self.activation = get_activation(config.activation)
        self.distilbert = DistilBertModel(config)
        self.vocab_transform = Linear(config.dim, config.dim)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)
        self.vocab_projector = Linear(config.dim, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.vocab_projector

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.vocab_projector = value

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.distilbert, _base_kwargs(
            input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states, return_dict))
        x = self.vocab_layer_norm(self.activation(self.vocab_transform(out.last_hidden_state)))
        logits = self.vocab_projector(x)
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return _finish(MaskedLMOutput, return_dict, loss, out, logits=logits)
