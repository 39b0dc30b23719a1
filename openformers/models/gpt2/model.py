"""GPT-2: a pre-LayerNorm decoder with learned absolute positions and Conv1D projections.

Parameter names follow the Hugging Face checkpoints (``wte``, ``wpe``, ``h.{i}.attn.c_attn``,
``ln_f``), so OpenAI, DistilGPT2 and DialoGPT checkpoints load without renaming.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from openformers.core.modeling import PreTrainedModel
from openformers.core.outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from openformers.models.gpt2.config import GPT2Config
from openformers.modules.attention import get_attention_backend
from openformers.modules.cache import Cache, as_cache
from openformers.modules.conv1d import Conv1D
from openformers.modules.dense import Linear
from openformers.modules.heads import (
    causal_lm_loss,
    classifier_dropout,
    pool_last_token,
    question_answering_logits,
    sequence_classification_loss,
    token_classification_loss,
)
from openformers.modules.masks import causal_mask


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    # the tanh approximation of GELU, written out as in the original GPT-2 code
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": _gelu_new,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation_function={name!r} is not supported; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class GPT2Attention(nn.Module):
    """Causal self-attention with a fused qkv projection (``c_attn``)."""

    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"n_embd={self.embed_dim} must be divisible by n_head={self.num_heads}")
        self.layer_idx = layer_idx
        self.scaling = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scaling /= float(layer_idx + 1)
        self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None, cache: Cache | None, output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        qkv = self.c_attn(hidden_states)
        b, t = qkv.shape[:2]
        q, k, v = qkv.split(self.embed_dim, dim=2)  # 3 x [b, t, E]
        # [b, t, E] -> [b, h, t, d]
        q, k, v = (x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2) for x in (q, k, v))
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # [b, h, past + t, d]
        backend = get_attention_backend(self.config.attn_implementation)
        dtype = q.dtype
        if self.config.reorder_and_upcast_attn:
            # scores and softmax in float32 for mixed-precision training stability
            q, k, v = q.float(), k.float(), v.float()
        out, weights = backend(
            q, k, v, mask, self.scaling, self.attn_dropout.p,
            is_causal=mask is None, output_attentions=output_attentions, training=self.training,
        )  # out: [b, t, h, d]
        out = out.to(dtype).reshape(b, t, self.embed_dim)
        return self.resid_dropout(self.c_proj(out)), (weights.to(dtype) if weights is not None else None)


class GPT2MLP(nn.Module):
    def __init__(self, intermediate_size: int, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(intermediate_size, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, intermediate_size)
        self.act = _activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2Block(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(inner, config)

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None, cache: Cache | None, output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.attn(self.ln_1(hidden_states), mask, cache, output_attentions)
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return hidden_states, weights


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    accepts_leading_dims = True  # input_ids [..., length]: the leading dimensions are flattened
    base_model_prefix = "transformer"
    _no_split_modules = ("GPT2Block",)
    # causal-bias buffers that old checkpoints (OpenAI's, DialoGPT) still carry
    _keys_to_ignore_on_load_unexpected = (r"(^|\.)attn\.(masked_)?bias$", r"(^|\.)crossattention\.(masked_)?bias$")

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        with torch.no_grad():
            if isinstance(module, Conv1D):
                module.weight.normal_(mean=0.0, std=std)
                module.bias.zero_()
            if isinstance(module, (GPT2Attention, GPT2MLP)):
                # residual projections are scaled down by depth (GPT-2 paper, section 2.3)
                module.c_proj.weight.normal_(mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))


def _check_kwargs(owner: str, kwargs: dict[str, Any]) -> None:
    if kwargs.get("encoder_hidden_states") is not None or kwargs.get("encoder_attention_mask") is not None:
        raise ValueError(f"{owner}: encoder_hidden_states (GPT-2 cross-attention) is not supported")
    unknown = sorted(k for k, v in kwargs.items() if k not in ("encoder_hidden_states", "encoder_attention_mask"))
    if unknown:
        raise TypeError(f"{owner}.forward got unexpected arguments {unknown}")


class GPT2Model(GPT2PreTrainedModel):
    """The bare GPT-2 decoder: token + position embeddings, ``n_layer`` blocks, final LayerNorm."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        if getattr(config, "add_cross_attention", False):
            raise ValueError("GPT2Config(add_cross_attention=True) is not supported: openformers' GPT-2 is decoder-only")
        self.embed_dim = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, self.embed_dim)
        self.wpe = nn.Embedding(config.n_positions, self.embed_dim)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT2Block(config, layer_idx=i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self._checkpoint_kwargs: dict[str, Any] = {"use_reentrant": False}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None, past_key_values: Cache | tuple | None = None,
        attention_mask: torch.Tensor | None = None, token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None, output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple:
        _check_kwargs(type(self).__name__, kwargs)
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = cfg.use_return_dict if return_dict is None else return_dict
        use_cache = getattr(cfg, "use_cache", True) if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False  # a cache cannot be rebuilt when layers are recomputed
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            input_shape = input_ids.shape
            input_ids = input_ids.reshape(-1, input_shape[-1])
            inputs_embeds = self.wte(input_ids)
        else:
            input_shape = inputs_embeds.shape[:-1]
            inputs_embeds = inputs_embeds.reshape(-1, input_shape[-1], self.embed_dim)
        b, t = inputs_embeds.shape[:2]
        cache = as_cache(past_key_values, bool(use_cache))
        past_len = cache.get_seq_length() if cache is not None else 0
        if past_len + t > cfg.n_positions and position_ids is None:
            raise ValueError(f"sequence of {past_len + t} tokens exceeds n_positions={cfg.n_positions}")
        if position_ids is None:
            # positions ignore attention_mask (as in the reference); left padding needs explicit position_ids
            position_ids = torch.arange(past_len, past_len + t, device=inputs_embeds.device)[None]
        hidden = inputs_embeds + self.wpe(position_ids.reshape(-1, t))
        if token_type_ids is not None:
            hidden = hidden + self.wte(token_type_ids.reshape(-1, t))  # GPT-2 embeds segment ids with wte
        hidden = self.drop(hidden)
        mask = self._mask(attention_mask, b, t, past_len, hidden.dtype, hidden.device)

        all_hidden: tuple[torch.Tensor, ...] = ()
        all_attn: tuple[torch.Tensor, ...] = ()
        for block in self.h:
            if output_hidden_states:
                all_hidden += (hidden,)
            if self.gradient_checkpointing and self.training:
                hidden, weights = checkpoint(block, hidden, mask, None, output_attentions, **self._checkpoint_kwargs)
            else:
                hidden, weights = block(hidden, mask, cache, output_attentions)
            if output_attentions:
                all_attn += (weights,)
        hidden = self.ln_f(hidden).view(*input_shape, self.embed_dim)
        if output_hidden_states:
            all_hidden += (hidden,)
        out = BaseModelOutputWithPast(
            last_hidden_state=hidden,
            past_key_values=cache if use_cache else None,
            hidden_states=all_hidden if output_hidden_states else None,
            attentions=all_attn if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()

    @staticmethod
    def _mask(
        attention_mask: torch.Tensor | None, b: int, t: int, past_len: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        if attention_mask is not None and attention_mask.dim() == 4:
            # a ready-made mask: boolean keep-mask or additive float mask [b, 1, q, k]
            if attention_mask.dtype == torch.bool:
                return torch.zeros(attention_mask.shape, dtype=dtype, device=device).masked_fill(
                    ~attention_mask, torch.finfo(dtype).min
                )
            return attention_mask.to(dtype)
        if attention_mask is not None:
            attention_mask = attention_mask.reshape(b, -1).to(device)
        return causal_mask(attention_mask, t, past_len, dtype, device, batch_size=b)


class GPT2LMHeadModel(GPT2PreTrainedModel):
    """GPT-2 with a language-modelling head tied to the token embeddings."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    _is_causal_lm = True

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None, past_key_values: Cache | tuple | None = None,
        attention_mask: torch.Tensor | None = None, token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None, output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0, num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """``logits_to_keep``: the last k positions' logits (0: all) or those at a 1D tensor of positions;
        ``labels`` are shifted inside (-100 is ignored)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        base = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, **kwargs,
        )
        hidden = base.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, num_items_in_batch=num_items_in_batch)
        out = CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=base.past_key_values,
            hidden_states=base.hidden_states, attentions=base.attentions,
        )
        return out if return_dict else out.to_tuple()


class GPT2ForSequenceClassification(GPT2PreTrainedModel):
    """GPT-2 scoring the last non-padding token of each row (``score``, no bias)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT2Model(config)
        self.score = Linear(config.n_embd, self.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None, past_key_values: Cache | tuple | None = None,
        attention_mask: torch.Tensor | None = None, token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None, output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutputWithPast | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        base = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, **kwargs,
        )
        pooled = pool_last_token(self.score(base.last_hidden_state), input_ids, self.config, type(self).__name__)
        loss = sequence_classification_loss(pooled, labels, self.config) if labels is not None else None
        out = SequenceClassifierOutputWithPast(
            loss=loss, logits=pooled, past_key_values=base.past_key_values,
            hidden_states=base.hidden_states, attentions=base.attentions,
        )
        return out if return_dict else out.to_tuple()


class GPT2ForTokenClassification(GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT2Model(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = Linear(config.n_embd, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None, past_key_values: Cache | tuple | None = None,
        attention_mask: torch.Tensor | None = None, token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None, output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        base = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, **kwargs,
        )
        logits = self.classifier(self.dropout(base.last_hidden_state))
        loss = token_classification_loss(logits, labels) if labels is not None else None
        out = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=base.hidden_states, attentions=base.attentions)
        return out if return_dict else out.to_tuple()


class GPT2ForQuestionAnswering(GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT2Model(config)
        self.qa_outputs = Linear(config.n_embd, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None, position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None, start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        output_attentions: bool | None = None, output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        base = self.transformer(
            input_ids, None, attention_mask, token_type_ids, position_ids, inputs_embeds,
            use_cache=False, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, **kwargs,
        )
        loss, start_logits, end_logits = question_answering_logits(
            self.qa_outputs(base.last_hidden_state), start_positions, end_positions)
        out = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=base.hidden_states, attentions=base.attentions,
        )
        return out if return_dict else out.to_tuple()
