"""Llama: pre-norm decoder with RMSNorm, rotary embeddings, grouped-query attention and SwiGLU.

Mistral, Qwen2, Qwen3, Gemma and Starcoder2 reuse these classes; their differences (sliding window, projection
biases, dropouts) are config fields read here, and Qwen3's per-head q/k norms, Gemma's norm offset and embedding
scale and Starcoder2's LayerNorms and plain MLP blocks their layer declares (``blocks``). The classification and question-answering heads are in heads.py.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from openformers.core.modeling import PreTrainedModel
from openformers.core.outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)
from openformers.models.llama.config import LlamaConfig
from openformers.modules.attention import get_attention_backend
from openformers.modules.blocks import DecoderBlocks, embedding_scale
from openformers.modules.cache import Cache, as_cache
from openformers.modules.dense import Linear
from openformers.modules.heads import causal_lm_loss
from openformers.modules.masks import causal_mask, packed_causal_mask, packed_sequence_ids, positions_from_cu_seqlens
from openformers.modules.mlp import decoder_mlp
from openformers.modules.norms import decoder_norm, rms_norm
from openformers.modules.rotary import RotaryEmbedding, apply_rotary

# keyword arguments that tokenizers or trainers pass and these models do not use (the flattening collator's
# lengths are read from ``cu_seq_lens_q`` when no ``position_ids`` come with them)
_IGNORED_KWARGS = frozenset({"token_type_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k",
                             "seq_idx"})


def _check_kwargs(model: nn.Module, kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(kwargs) - _IGNORED_KWARGS)
    if unknown:
        raise TypeError(f"{type(model).__name__}.forward got unexpected keyword arguments {unknown}")


def layer_sliding_windows(config: LlamaConfig) -> list[int | None]:
    """The attention window of each layer: ``config.sliding_window`` where it applies, else None.

    With ``layer_types`` (Qwen2) only "sliding_attention" layers are windowed; without it
    (Mistral) every layer uses ``sliding_window`` when set.
    """
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None:
        return [window] * config.num_hidden_layers
    return [window if t == "sliding_attention" else None for t in layer_types[: config.num_hidden_layers]]


@functools.lru_cache(maxsize=64)
def _rounded(value: float, dtype: torch.dtype) -> float:
    """``value`` as a float32 scalar rounded to ``dtype`` (exact in float32, so multiplying by the Python number
    gives the bits of multiplying by that scalar tensor), made once per value and dtype."""
    return float(torch.tensor(value, dtype=torch.float32).to(dtype))


class LlamaAttention(nn.Module):
    """Multi-head attention with rotary embeddings and grouped key/value heads; with ``qk_norm``, an
    RMSNorm over every query and key head (``q_norm``, ``k_norm``) before the rotary embedding (Qwen3), with
    ``norm_offset`` as the layer's blocks say (modules/blocks.py)."""

    def __init__(self, config: LlamaConfig, layer_idx: int, qk_norm: bool = False, norm_offset: float = 0.0) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        qkv_bias = bool(getattr(config, "attention_bias", False))
        out_bias = getattr(config, "attention_out_bias", None)  # None: as q, k and v
        out_bias = qkv_bias if out_bias is None else bool(out_bias)
        self.q_proj = Linear(config.hidden_size, self.num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = Linear(self.num_heads * self.head_dim, config.hidden_size, bias=out_bias)
        if qk_norm:
            self.q_norm = rms_norm(self.head_dim, config.rms_norm_eps, norm_offset)
            self.k_norm = rms_norm(self.head_dim, config.rms_norm_eps, norm_offset)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, q_len = hidden_states.shape[:2]
        # [b, seq, hidden] -> [b, seq, heads, head_dim]
        q = self.q_proj(hidden_states).view(b, q_len, -1, self.head_dim)
        k = self.k_proj(hidden_states).view(b, q_len, -1, self.head_dim)
        v = self.v_proj(hidden_states).view(b, q_len, -1, self.head_dim)
        if "q_norm" in self._modules:  # per-head norms over head_dim
            q, k = self.q_norm(q), self.k_norm(k)
        # -> [b, heads, seq, head_dim]
        q, k = apply_rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # [b, kv_heads, past + seq, head_dim]
        backend = get_attention_backend(self.config.attn_implementation)
        out, weights = backend(
            q, k, v, mask, self.scaling, self.config.attention_dropout if self.training else 0.0,
            is_causal=mask is None, output_attentions=output_attentions, training=self.training,
        )
        out = out.reshape(b, q_len, -1)  # out was [b, seq, heads, head_dim]
        return self.o_proj(out), weights


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)).

    ``blocks`` describes this forward to the inference runtime (modules/blocks.py); a subclass that
    changes the math declares its own."""

    blocks: ClassVar[DecoderBlocks] = DecoderBlocks()
    attention_class: ClassVar[type[nn.Module]] = LlamaAttention

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        blocks = self.blocks
        offset = blocks.norm_offset
        self.self_attn = self.attention_class(config, layer_idx, qk_norm=blocks.qk_norm, norm_offset=offset)
        self.mlp = decoder_mlp(blocks.mlp, config)
        self.input_layernorm = decoder_norm(blocks.norm, config.hidden_size, config.rms_norm_eps, offset)
        self.post_attention_layernorm = decoder_norm(blocks.norm, config.hidden_size, config.rms_norm_eps, offset)
        # dropout of the attention's and the MLP's outputs before each residual (Starcoder2; training only)
        self.residual_dropout = float(getattr(config, "residual_dropout", 0.0))

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.self_attn(self.input_layernorm(hidden_states), cos, sin, mask, cache, output_attentions)
        if self.residual_dropout and self.training:
            attn_out = F.dropout(attn_out, self.residual_dropout, training=True)
        hidden_states = hidden_states + attn_out
        mlp_out = self.mlp(self.post_attention_layernorm(hidden_states))
        if self.residual_dropout and self.training:
            mlp_out = F.dropout(mlp_out, self.residual_dropout, training=True)
        return hidden_states + mlp_out, weights


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    _no_split_modules = ("LlamaDecoderLayer",)
    # checkpoints from the first Llama ports stored the rotary frequencies
    _keys_to_ignore_on_load_unexpected = (r"rotary_emb\.inv_freq$",)


class LlamaModel(LlamaPreTrainedModel):
    """The decoder stack; returns the final normed hidden states."""

    decoder_layer_class: ClassVar[type[nn.Module]] = LlamaDecoderLayer
    # what the inference runtime reads of this forward: layer_inputs, the layers, norm (runtime/decoder.py)
    decoder_role: ClassVar[str] = "stack"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(self.decoder_layer_class(config, i) for i in range(config.num_hidden_layers))
        blocks = self.decoder_layer_class.blocks
        self.norm = decoder_norm(blocks.norm, config.hidden_size, config.rms_norm_eps, blocks.norm_offset)
        # dropout of the embeddings the layers read (Starcoder2; training only)
        self.embedding_dropout = float(getattr(config, "embedding_dropout", 0.0))
        # the token embeddings' scale (None: not scaled), from the layer's blocks
        self.embedding_scale = embedding_scale(blocks, config)
        self.rotary_emb = RotaryEmbedding(config)
        self.gradient_checkpointing = False
        self._checkpoint_kwargs: dict[str, Any] = {"use_reentrant": False}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def _masks(
        self, attention_mask: torch.Tensor | None, q_len: int, past_len: int, embeds: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor | None]:
        """One additive mask per layer (None: plain causal), built once per distinct window. Without an
        attention mask or a cache, ``position_ids`` that restart inside a row mark several documents packed
        in it (``DataCollatorWithFlattening``): each token attends within its own document."""
        windows = layer_sliding_windows(self.config)
        documents = packed_sequence_ids(position_ids) if attention_mask is None and past_len == 0 else None
        if documents is not None:
            packed = {w: packed_causal_mask(documents, embeds.dtype, sliding_window=w) for w in set(windows)}
            return [packed[w] for w in windows]
        if attention_mask is not None and attention_mask.dim() == 4:  # a ready-made [b, 1, q, k] mask
            mask = attention_mask
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=embeds.dtype, device=mask.device).masked_fill(~mask, torch.finfo(embeds.dtype).min)
            return [mask.to(embeds.dtype)] * len(windows)
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be [batch, seq] (or a 4D mask), got shape {tuple(attention_mask.shape)}")
        built: dict[int | None, torch.Tensor | None] = {}
        for w in windows:
            if w not in built:
                built[w] = causal_mask(
                    attention_mask, q_len, past_len, embeds.dtype, embeds.device, sliding_window=w, batch_size=embeds.shape[0]
                )
        return [built[w] for w in windows]

    def layer_inputs(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        past_key_values: Cache | tuple | None,
        inputs_embeds: torch.Tensor | None,
        use_cache: bool,
        cache_position: torch.LongTensor | None = None,
        cu_seq_lens_q: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Cache | None, list[torch.Tensor | None], torch.Tensor, torch.Tensor]:
        """What the layers read: (embeddings [b, seq, hidden], the cache, one mask per layer, cos, sin).
        Also what the inference runtime feeds its own run of the layers."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
            if self.embedding_scale is not None:  # a float32 scalar rounded to the embeddings' dtype
                inputs_embeds = inputs_embeds * _rounded(self.embedding_scale, inputs_embeds.dtype)
        if self.embedding_dropout and self.training:
            inputs_embeds = F.dropout(inputs_embeds, self.embedding_dropout, training=True)
        cache = as_cache(past_key_values, use_cache)
        past_len = cache.get_seq_length() if cache is not None else 0
        q_len = inputs_embeds.shape[1]
        if position_ids is None and cu_seq_lens_q is not None:
            position_ids = positions_from_cu_seqlens(cu_seq_lens_q, inputs_embeds.device)
        if position_ids is None:
            if cache_position is not None:
                position_ids = cache_position.view(1, -1)
            else:
                position_ids = (torch.arange(q_len, device=inputs_embeds.device) + past_len)[None]
        masks = self._masks(attention_mask, q_len, past_len, inputs_embeds, position_ids)
        cos, sin = self.rotary_emb(inputs_embeds, position_ids)  # [b or 1, seq, rot_dim]
        return inputs_embeds, cache, masks, cos, sin

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | tuple | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the decoder. Without ``position_ids`` positions continue from the cache length
        (or follow ``cache_position``); with left padding pass positions from the mask, e.g.
        ``(attention_mask.cumsum(-1) - 1).clamp(min=0)``. ``attention_mask`` covers cached and
        new positions. Returns ``past_key_values`` (a DynamicCache unless one is passed) when
        ``use_cache``. Several documents packed in one row (``DataCollatorWithFlattening``): pass
        ``position_ids`` restarting at each document (or its ``cu_seq_lens_q``) and no mask."""
        _check_kwargs(self, kwargs)
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = cfg.use_return_dict if return_dict is None else return_dict
        use_cache = getattr(cfg, "use_cache", True) if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False  # checkpointed layers recompute; a cache would be filled twice
        hidden, cache, masks, cos, sin = self.layer_inputs(
            input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache, cache_position,
            kwargs.get("cu_seq_lens_q"))

        all_hidden: tuple[torch.Tensor, ...] = ()
        all_attn: tuple[torch.Tensor, ...] = ()
        for layer, mask in zip(self.layers, masks):
            if output_hidden_states:
                all_hidden += (hidden,)
            if self.gradient_checkpointing and self.training:
                hidden, weights = checkpoint(layer, hidden, cos, sin, mask, None, output_attentions,
                                             **self._checkpoint_kwargs)
            else:
                hidden, weights = layer(hidden, cos, sin, mask, cache, output_attentions)
            if output_attentions:
                all_attn += (weights,)
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden += (hidden,)
        out = BaseModelOutputWithPast(
            last_hidden_state=hidden,
            past_key_values=cache if use_cache else None,
            hidden_states=all_hidden if output_hidden_states else None,
            attentions=all_attn if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()


def _base_kwargs(model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Forward arguments for the base model, with return_dict forced on (and the flattening collator's
    ``cu_seq_lens_q`` passed on)."""
    _check_kwargs(model, kwargs)
    out: dict[str, Any] = {"return_dict": True}
    if kwargs.get("cu_seq_lens_q") is not None:
        out["cu_seq_lens_q"] = kwargs["cu_seq_lens_q"]
    return out


def _finish(model: nn.Module, out: Any, return_dict: bool | None) -> Any:
    return_dict = model.config.use_return_dict if return_dict is None else return_dict
    return out if return_dict else out.to_tuple()


class LlamaForCausalLM(LlamaPreTrainedModel):
    """Llama with a language-modelling head (``lm_head``, tied to the embeddings when configured)."""

    base_model_class: ClassVar[type[LlamaModel]] = LlamaModel
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _is_causal_lm = True
    # what the inference runtime reads of this forward: the stack, then lm_head (runtime/decoder.py)
    decoder_role: ClassVar[str] = "causal_lm"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

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
        logits_to_keep: int | torch.Tensor = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """``logits_to_keep``: an int k keeps the logits of the last k positions (0: all); a 1D
        tensor keeps those positions. ``labels`` are shifted inside (-100 is ignored)."""
        outputs = self.model(
            input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
            output_attentions, output_hidden_states, cache_position=cache_position, **_base_kwargs(self, kwargs),
        )
        hidden = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            if logits_to_keep < 0:
                raise ValueError(f"logits_to_keep must be >= 0 (0 keeps every position), got {logits_to_keep}")
            if logits_to_keep:
                hidden = hidden[:, -logits_to_keep:]
        else:
            hidden = hidden[:, logits_to_keep.to(hidden.device)]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, num_items_in_batch=num_items_in_batch)
        out = CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return _finish(self, out, return_dict)

