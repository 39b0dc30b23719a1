"""Qwen2: Llama with biased q/k/v projections and optional sliding-window layers."""
from __future__ import annotations

from typing import Any, ClassVar

from openformers.models.llama.config import LlamaConfig
from openformers.models.llama.heads import (
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from openformers.models.llama.model import LlamaForCausalLM, LlamaModel


def sliding_layer_types(
    layer_types: list[str] | None, sliding_window: int | None, max_window_layers: int, num_hidden_layers: int
) -> list[str]:
    """Each layer's attention kind: ``layer_types`` checked, or by default "sliding_attention" from
    layer ``max_window_layers`` on when a window is set (Qwen2 and Qwen3)."""
    if layer_types is None:
        layer_types = [
            "sliding_attention" if sliding_window is not None and i >= max_window_layers else "full_attention"
            for i in range(num_hidden_layers)
        ]
    bad = sorted(set(layer_types) - {"sliding_attention", "full_attention"})
    if bad or len(layer_types) != num_hidden_layers:
        raise ValueError(
            f"layer_types must list 'full_attention' or 'sliding_attention' for each of the {num_hidden_layers} "
            f"layers; got {layer_types}"
        )
    return list(layer_types)


class Qwen2Config(LlamaConfig):
    """Configuration of a Qwen2 model; defaults as in transformers.

    q/k/v projections carry a bias, o_proj and the MLP do not. ``sliding_window`` applies
    only when ``use_sliding_window`` is set, and then to the layers ``layer_types`` marks
    "sliding_attention" (by default those from ``max_window_layers`` on).
    """

    model_type: ClassVar[str] = "qwen2"
    # fixed by the architecture: class-level constants, never written to config.json
    attention_bias: ClassVar[bool] = True
    attention_out_bias: ClassVar[bool | None] = False
    mlp_bias: ClassVar[bool] = False
    # LlamaConfig arguments that the class constants above fix: dropped from the arguments and the instance
    _fixed_fields: ClassVar[tuple[str, ...]] = ("attention_bias", "mlp_bias", "pretraining_tp")

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 4096,
        intermediate_size: int = 22016,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = 32,
        hidden_act: str = "silu",
        max_position_embeddings: int = 32768,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        rope_parameters: dict[str, Any] | None = None,
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
        for key in self._fixed_fields:
            kwargs.pop(key, None)
        super().__init__(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads, hidden_act=hidden_act,
            max_position_embeddings=max_position_embeddings, initializer_range=initializer_range,
            rms_norm_eps=rms_norm_eps, use_cache=use_cache, pad_token_id=pad_token_id,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings,
            rope_parameters=rope_parameters, attention_dropout=attention_dropout, **kwargs,
        )
        for key in self._fixed_fields:
            self.__dict__.pop(key, None)


class Qwen2Model(LlamaModel):
    config_class = Qwen2Config


class Qwen2ForCausalLM(LlamaForCausalLM):
    config_class = Qwen2Config
    base_model_class = Qwen2Model


class Qwen2ForSequenceClassification(LlamaForSequenceClassification):
    config_class = Qwen2Config
    base_model_class = Qwen2Model


class Qwen2ForTokenClassification(LlamaForTokenClassification):
    config_class = Qwen2Config
    base_model_class = Qwen2Model


class Qwen2ForQuestionAnswering(LlamaForQuestionAnswering):
    config_class = Qwen2Config
    base_model_class = Qwen2Model
