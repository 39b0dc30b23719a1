"""Gemma (the first release): Llama's layer with three known blocks of its own (``modules/blocks.py``):
RMSNorms that multiply by ``1 + weight`` in float32 (weights start at zeros), token embeddings scaled by
``sqrt(hidden_size)``, and a GeGLU MLP (``hidden_act="gelu_pytorch_tanh"``). ``head_dim`` is its own field
(256 by default) and the embeddings are tied to the LM head by default.
"""
from __future__ import annotations

from typing import Any, ClassVar

from openformers.models.llama.config import LlamaConfig
from openformers.models.llama.heads import LlamaForSequenceClassification, LlamaForTokenClassification
from openformers.models.llama.model import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from openformers.modules.blocks import DecoderBlocks

# llama.cpp's GGUF names ("gemma" architecture): Llama's block names; q and k rows in the Hugging Face order (no
# rotary reordering); every norm weight stored with the offset added (offset + weight); no LM head (tied)
GGUF_ARCHITECTURE = "gemma"
GGUF_BLOCK_NAMES: dict[str, str] = {}
GGUF_NORM_OFFSET = 1.0
GGUF_CONFIG = {"hidden_act": "gelu_pytorch_tanh"}  # what the file's metadata does not say


class GemmaConfig(LlamaConfig):
    """Configuration of a Gemma model; defaults as in transformers (Gemma-7B's shape).

    ``hidden_act="gelu"`` (the value of the first released configs) means the tanh approximation, as in
    transformers. ``use_bidirectional_attention`` (a field of transformers' config) is kept for round trips;
    only causal attention is implemented.
    """

    model_type: ClassVar[str] = "gemma"
    # Gemma's MLP has no bias: a class-level constant, never written to config.json
    mlp_bias: ClassVar[bool] = False
    _fixed_fields: ClassVar[tuple[str, ...]] = ("mlp_bias", "pretraining_tp")

    def __init__(
        self,
        vocab_size: int = 256000,
        hidden_size: int = 3072,
        intermediate_size: int = 24576,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = 16,
        head_dim: int = 256,
        hidden_act: str = "gelu_pytorch_tanh",
        max_position_embeddings: int = 8192,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        eos_token_id: int | list[int] | None = 1,
        bos_token_id: int | None = 2,
        tie_word_embeddings: bool = True,
        rope_parameters: dict[str, Any] | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        use_bidirectional_attention: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if use_bidirectional_attention:
            raise ValueError("GemmaConfig(use_bidirectional_attention=True) is not supported: openformers' Gemma "
                             "attends causally; leave it None or False")
        self.use_bidirectional_attention = use_bidirectional_attention
        for key in self._fixed_fields:
            kwargs.pop(key, None)
        super().__init__(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            hidden_act="gelu_pytorch_tanh" if hidden_act == "gelu" else hidden_act,
            max_position_embeddings=max_position_embeddings, initializer_range=initializer_range,
            rms_norm_eps=rms_norm_eps, use_cache=use_cache, pad_token_id=pad_token_id,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings,
            rope_parameters=rope_parameters, attention_bias=attention_bias, attention_dropout=attention_dropout,
            head_dim=head_dim, **kwargs,
        )
        for key in self._fixed_fields:
            self.__dict__.pop(key, None)


class GemmaDecoderLayer(LlamaDecoderLayer):
    blocks = DecoderBlocks(norm_offset=1.0, embedding_scale="sqrt_hidden_size", mlp="gated")


class GemmaModel(LlamaModel):
    config_class = GemmaConfig
    decoder_layer_class = GemmaDecoderLayer
    _no_split_modules = ("GemmaDecoderLayer",)


class GemmaForCausalLM(LlamaForCausalLM):
    config_class = GemmaConfig
    base_model_class = GemmaModel
    _no_split_modules = ("GemmaDecoderLayer",)


class GemmaForSequenceClassification(LlamaForSequenceClassification):
    config_class = GemmaConfig
    base_model_class = GemmaModel
    _no_split_modules = ("GemmaDecoderLayer",)


class GemmaForTokenClassification(LlamaForTokenClassification):
    config_class = GemmaConfig
    base_model_class = GemmaModel
    _no_split_modules = ("GemmaDecoderLayer",)
