"""Qwen3: Qwen2's configuration without the fixed q/k/v biases, and Llama's layer with an RMSNorm over
each query and key head before the rotary embedding (the ``qk_norm`` block).

``attention_bias`` covers q, k, v and o (off by default) and ``head_dim`` is its own field.
"""
from __future__ import annotations

from typing import Any, ClassVar

from openformers.models.llama.heads import (
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from openformers.models.llama.model import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from openformers.models.llama.qwen2 import Qwen2Config
from openformers.modules.blocks import DecoderBlocks

# llama.cpp's GGUF names ("qwen3" architecture): Llama's block names plus the two per-head norms;
# q and k rows are stored in the Hugging Face order (no rotary reordering as for "llama")
GGUF_ARCHITECTURE = "qwen3"
GGUF_BLOCK_NAMES = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


class Qwen3Config(Qwen2Config):
    """Configuration of a Qwen3 model; defaults as in transformers (Qwen3-8B's shape).

    As ``Qwen2Config``, plus ``head_dim`` (128, not ``hidden_size // num_attention_heads``) and
    ``attention_bias`` (False) for all four attention projections.
    """

    model_type: ClassVar[str] = "qwen3"
    attention_out_bias: ClassVar[bool | None] = None  # o_proj's bias follows attention_bias
    _fixed_fields: ClassVar[tuple[str, ...]] = ("mlp_bias", "pretraining_tp")

    def __init__(self, *args: Any, head_dim: int = 128, attention_bias: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, head_dim=head_dim, attention_bias=attention_bias, **kwargs)


class Qwen3DecoderLayer(LlamaDecoderLayer):
    blocks = DecoderBlocks(qk_norm=True)


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
