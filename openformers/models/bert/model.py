"""BERT: the encoder, its building blocks and the task heads.

Parameter names follow transformers (``bert.encoder.layer.{i}.attention.self.query`` ...), so
checkpoints load without mapping. RoBERTa and DistilBERT reuse these blocks.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from openformers.core.modeling import PreTrainedModel
from openformers.core.outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from openformers.models.bert.config import BertConfig
from openformers.modules.attention import get_attention_backend
from openformers.modules.dense import Linear
from openformers.modules.encoder_blocks import EncoderBlocks, EncoderDropouts, EncoderStack
from openformers.modules.heads import (
    classifier_dropout,
    masked_lm_loss,
    question_answering_logits,
    sequence_classification_loss,
    token_classification_loss,
)
from openformers.modules.masks import padding_mask

ACT2FN: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACT2FN:
        raise ValueError(f"activation {name!r} is not supported; choose one of {sorted(ACT2FN)}")
    return ACT2FN[name]


def embedding(num: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """An ``nn.Embedding`` without its own random init (post_init or the checkpoint fills it).

    nn.Embedding's init (``normal_``) has no C++ meta kernel: on the meta device, where
    from_pretrained builds the model, it imports torch's Python reference ops (~800 modules,
    about 4 s). Passing the storage in skips it.
    """
    return nn.Embedding(num, dim, padding_idx=padding_idx, _weight=torch.empty(num, dim))


# --- building blocks ---------------------------------------------------------------------
def resolve_flags(config: Any, output_attentions: bool | None, output_hidden_states: bool | None,
                  return_dict: bool | None) -> tuple[bool, bool, bool]:
    """The forward flags, each falling back to the config's value when not given."""
    return (
        config.output_attentions if output_attentions is None else output_attentions,
        config.output_hidden_states if output_hidden_states is None else output_hidden_states,
        config.use_return_dict if return_dict is None else return_dict,
    )


class BertEmbeddings(nn.Module):
    """word + position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = embedding(config.vocab_size, config.hidden_size, self._padding_idx(config))
        self.position_embeddings = embedding(
            config.max_position_embeddings, config.hidden_size, self._position_padding_idx(config)
        )
        self.token_type_embeddings = embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    @staticmethod
    def _padding_idx(config: BertConfig) -> int | None:
        return config.pad_token_id

    @staticmethod
    def _position_padding_idx(config: BertConfig) -> int | None:
        return None

    def make_position_ids(
        self, input_ids: torch.Tensor | None, seq_len: int, device: torch.device, past_length: int = 0
    ) -> torch.Tensor:
        return torch.arange(past_length, past_length + seq_len, device=device)[None, :]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        seq_len, device = inputs_embeds.shape[1], inputs_embeds.device
        if position_ids is None:
            position_ids = self.make_position_ids(input_ids, seq_len, device)
        x = inputs_embeds + self.position_embeddings(position_ids)
        if token_type_ids is None:
            # all-zero token types: add row 0 instead of gathering a [b, s] index tensor
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.config = config

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False):
        b, s, _ = x.shape
        # [b, s, hidden] -> [b, heads, s, head_dim]
        q = self.query(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.key(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.value(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        attend = get_attention_backend(self.config.attn_implementation)
        out, weights = attend(
            q, k, v, mask, 1.0 / math.sqrt(self.head_dim), self.dropout_prob,
            output_attentions=output_attentions, training=self.training,
        )
        return out.reshape(b, s, -1), weights  # [b, s, heads, head_dim] -> [b, s, hidden]


class BertSelfOutput(nn.Module):
    """dense -> dropout -> LayerNorm(residual + .); used after attention and after the MLP."""

    def __init__(self, config: BertConfig, in_features: int | None = None) -> None:
        super().__init__()
        self.dense = Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False):
        out, weights = self.self(x, mask, output_attentions)
        return self.output(out, x), weights


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.act = get_activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    # what forward is made of, for the runtime (modules/encoder_blocks.py)
    blocks: ClassVar[EncoderBlocks] = EncoderBlocks(
        q="attention.self.query", k="attention.self.key", v="attention.self.value",
        attention_out="attention.output.dense", attention_norm="attention.output.LayerNorm",
        mlp_in="intermediate.dense", mlp_out="output.dense", mlp_norm="output.LayerNorm",
        dropouts=EncoderDropouts(attention="attention.self.dropout_prob", attention_out="attention.output.dropout",
                                 mlp_out="output.dropout"),
    )

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config, in_features=config.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False):
        """Post-norm: LN(x + attention(x)), then LN(. + MLP(.))."""
        y, weights = self.attention(x, mask, output_attentions)
        return self.output(self.intermediate(y), y), weights


class BertEncoder(nn.Module):
    """A stack of layers; collects hidden states and attention weights when asked."""

    def __init__(self, config: Any, layer_class: type[nn.Module] = BertLayer, n_layers: int | None = None) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layer_class(config) for _ in range(n_layers or config.num_hidden_layers))
        self.gradient_checkpointing = False
        self._checkpoint_kwargs: dict[str, Any] = {"use_reentrant": False}

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, output_hidden_states: bool = False, output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        hidden_states: list[torch.Tensor] = []
        attentions: list[torch.Tensor] = []
        for layer in self.layer:
            if output_hidden_states:
                hidden_states.append(x)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, weights = checkpoint(layer, x, mask, output_attentions, **self._checkpoint_kwargs)
            else:
                x, weights = layer(x, mask, output_attentions)
            if output_attentions:
                attentions.append(weights)
        if output_hidden_states:
            hidden_states.append(x)
        return x, (tuple(hidden_states) if output_hidden_states else None), (tuple(attentions) if output_attentions else None)


class BertPooler(nn.Module):
    """tanh(dense(first token))."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


# --- models ------------------------------------------------------------------------------
class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    _no_split_modules = ("BertLayer",)
    # transformers 4 files hold the position-ids buffer; it is computed here
    _keys_to_ignore_on_load_unexpected = (r"embeddings\.position_ids$",)


class BertModel(BertPreTrainedModel):
    """The bare encoder: ``last_hidden_state`` and (with ``add_pooling_layer``) ``pooler_output``."""

    embeddings_class: ClassVar[type[nn.Module]] = BertEmbeddings
    encoder_stack: ClassVar[EncoderStack] = EncoderStack(
        layers="encoder.layer", inputs=("input_ids", "token_type_ids", "position_ids", "inputs_embeds"), pooler="pooler")

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = self.embeddings_class(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        output_attentions, output_hidden_states, return_dict = resolve_flags(self.config, output_attentions, output_hidden_states, return_dict)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        mask = padding_mask(attention_mask, x.dtype)
        x, hidden_states, attentions = self.encoder(x, mask, output_hidden_states, output_attentions)
        pooled = self.pooler(x) if self.pooler is not None else None
        if not return_dict:
            return tuple(v for v in (x, pooled, hidden_states, attentions) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states, attentions=attentions
        )


def _encode(model: PreTrainedModel, base: nn.Module, kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """Run the base model of a head with return_dict=True; return its output and the caller's return_dict."""
    return_dict = kwargs.pop("return_dict", None)
    return_dict = model.config.use_return_dict if return_dict is None else return_dict
    return base(**kwargs, return_dict=True), return_dict


def _inputs(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_attentions,
            output_hidden_states, return_dict, **extra: Any) -> dict[str, Any]:
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                position_ids=position_ids, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states, return_dict=return_dict, **extra)


def _finish(output_cls: type, return_dict: bool, loss: torch.Tensor | None, base_out: Any, **fields: Any) -> Any:
    extra = {"hidden_states": base_out.get("hidden_states"), "attentions": base_out.get("attentions")}
    if not return_dict:
        values = (loss, *fields.values(), *extra.values())
        return tuple(v for v in values if v is not None)
    return output_cls(loss=loss, **fields, **extra)


class BertForSequenceClassification(BertPreTrainedModel):
    """Pooled output -> dropout -> classifier; loss by ``config.problem_type``."""

    encoder_reads: ClassVar[str] = "first"  # the pooler reads the first position alone

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(classifier_dropout(config, config.hidden_dropout_prob))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.bert, _inputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_attentions, output_hidden_states,
            return_dict))
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return _finish(SequenceClassifierOutput, return_dict, loss, out, logits=logits)


class BertForTokenClassification(BertPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = (r"embeddings\.position_ids$", r"pooler")

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(classifier_dropout(config, config.hidden_dropout_prob))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.base_model, _inputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_attentions, output_hidden_states,
            return_dict))
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = token_classification_loss(logits, labels) if labels is not None else None
        return _finish(TokenClassifierOutput, return_dict, loss, out, logits=logits)


class BertForQuestionAnswering(BertPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = (r"embeddings\.position_ids$", r"pooler")

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                start_positions=None, end_positions=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.base_model, _inputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_attentions, output_hidden_states,
            return_dict))
        loss, start_logits, end_logits = question_answering_logits(
            self.qa_outputs(out.last_hidden_state), start_positions, end_positions)
        return _finish(QuestionAnsweringModelOutput, return_dict, loss, out, start_logits=start_logits, end_logits=end_logits)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.act = get_activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        # the file's `cls.predictions.bias` is this decoder's bias (see checkpoint_rules)
        self.decoder = Linear(config.hidden_size, config.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictions(x)


class BertForMaskedLM(BertPreTrainedModel):
    """Encoder -> transform -> decoder tied to the word embeddings."""

    _tied_weights_keys = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    checkpoint_rules = ((r"^cls\.predictions\.bias$", "cls.predictions.decoder.bias"),)
    save_rules = ((r"^cls\.predictions\.decoder\.bias$", "cls.predictions.bias"),)
    _keys_to_ignore_on_load_unexpected = (r"embeddings\.position_ids$", r"pooler", r"^cls\.seq_relationship")

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.cls.predictions.decoder = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs: Any) -> Any:
        out, return_dict = _encode(self, self.bert, _inputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_attentions, output_hidden_states,
            return_dict))
        logits = self.cls(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = masked_lm_loss(logits, labels)
        return _finish(MaskedLMOutput, return_dict, loss, out, logits=logits)
