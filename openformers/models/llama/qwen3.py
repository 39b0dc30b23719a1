"""Qwen3: Llama with an RMSNorm over each query and key head before the rotary embedding.

Everything else is Llama's: no projection biases by default (``attention_bias`` covers q, k, v
and o), a free ``head_dim``, and Qwen2's optional sliding-window layers.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from openformers.models.llama.config import LlamaConfig
from openformers.models.llama.heads import (
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from openformers.models.llama.model import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from openformers.models.llama.qwen2 import sliding_layer_types
from openformers.modules.attention import get_attention_backend
from openformers.modules.cache import Cache
from openformers.modules.norms import RMSNorm
from openformers.modules.packing import TokenPacking
from openformers.modules.rotary import apply_rotary

# llama.cpp's GGUF names ("qwen3" architecture): Llama's block names plus the two per-head norms;
# q and k rows are stored in the Hugging Face order (no rotary reordering as for "llama")
GGUF_ARCHITECTURE = "qwen3"
GGUF_BLOCK_NAMES = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


class Qwen3Config(LlamaConfig):
    """Configuration of a Qwen3 model; defaults as in transformers (Qwen3-8B's shape).

    ``head_dim`` is its own field (128), not ``hidden_size // num_attention_heads``.
    ``sliding_window`` applies only when ``use_sliding_window`` is set, and then to the layers
    ``layer_types`` marks "sliding_attention" (by default those from ``max_window_layers`` on).
    """

    model_type: ClassVar[str] = "qwen3"
    # fixed by the architecture: a class-level constant, never written to config.json
    mlp_bias: ClassVar[bool] = False

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 4096,
        intermediate_size: int = 22016,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = 32,
        head_dim: int = 128,
        hidden_act: str = "silu",
        max_position_embeddings: int = 32768,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        rope_parameters: dict[str, Any] | None = None,
        attention_bias: bool = False,
        use_sliding_window: bool = False,
        sliding_window: int | None = 4096,
        max_window_layers: int = 28,
        layer_types: list[str] | None = None,
        attention_dropout: float = 0.0,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window if use_sliding_window else None
        self.max_window_layers = max_window_layers
        self.layer_types = sliding_layer_types(layer_types, self.sliding_window, max_window_layers, num_hidden_layers)
        for key in ("mlp_bias", "pretraining_tp"):
            kwargs.pop(key, None)
        super().__init__(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads, head_dim=head_dim, hidden_act=hidden_act,
            max_position_embeddings=max_position_embeddings, initializer_range=initializer_range,
            rms_norm_eps=rms_norm_eps, use_cache=use_cache, pad_token_id=pad_token_id,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings,
            rope_parameters=rope_parameters, attention_bias=attention_bias, attention_dropout=attention_dropout,
            **kwargs,
        )
        for key in ("mlp_bias", "pretraining_tp"):
            self.__dict__.pop(key, None)


class Qwen3Attention(LlamaAttention):
    """Llama attention with ``q_norm`` and ``k_norm``: RMSNorms of ``head_dim`` applied to every
    query and key head after the projection and before the rotary embedding."""

    def __init__(self, config: Qwen3Config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        packing: TokenPacking | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden_states`` [b, seq, hidden] (or packed rows [n, hidden] with ``packing``) -> [b, seq, hidden]."""
        b, q_len = (packing.batch, packing.seq) if packing is not None else hidden_states.shape[:2]
        unpack = packing.unpack if packing is not None else (lambda t: t)
        # [b, seq, hidden] -> [b, seq, heads, head_dim] -> norm over head_dim -> [b, heads, seq, head_dim]
        q = self.q_norm(unpack(self.q_proj(hidden_states)).view(b, q_len, -1, self.head_dim)).transpose(1, 2)
        k = self.k_norm(unpack(self.k_proj(hidden_states)).view(b, q_len, -1, self.head_dim)).transpose(1, 2)
        v = unpack(self.v_proj(hidden_states)).view(b, q_len, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # [b, kv_heads, past + seq, head_dim]
        backend = get_attention_backend(self.config.attn_implementation)
        out, weights = backend(
            q, k, v, mask, self.scaling, self.config.attention_dropout if self.training else 0.0,
            is_causal=mask is None, output_attentions=output_attentions, training=self.training,
        )
        out = out.reshape(b, q_len, -1)  # out was [b, seq, heads, head_dim]
        return self.o_proj(out if packing is None else packing.pack(out)), weights


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_class = Qwen3Attention


class Qwen3Model(LlamaModel):
    config_class = Qwen3Config
    decoder_layer_class = Qwen3DecoderLayer
    _no_split_modules = ("Qwen3DecoderLayer",)


class Qwen3ForCausalLM(LlamaForCausalLM):
    config_class = Qwen3Config
    base_model_class = Qwen3Model
    _no_split_modules = ("Qwen3DecoderLayer",)


class Qwen3ForSequenceClassification(LlamaForSequenceClassification):
    config_class = Qwen3Config
    base_model_class = Qwen3Model
    _no_split_modules = ("Qwen3DecoderLayer",)


class Qwen3ForTokenClassification(LlamaForTokenClassification):
    config_class = Qwen3Config
    base_model_class = Qwen3Model
    _no_split_modules = ("Qwen3DecoderLayer",)


class Qwen3ForQuestionAnswering(LlamaForQuestionAnswering):
    config_class = Qwen3Config
    base_model_class = Qwen3Model
    _no_split_modules = ("Qwen3DecoderLayer",)
