"""Mistral: Llama with a sliding attention window and no projection biases."""
from __future__ import annotations

from typing import Any, ClassVar

from openformers.models.llama.config import LlamaConfig
from openformers.models.llama.heads import (
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from openformers.models.llama.model import LlamaForCausalLM, LlamaModel


class MistralConfig(LlamaConfig):
    """Configuration of a Mistral model; defaults are those of Mistral-7B, as in transformers.

    ``sliding_window`` (None: full attention) limits every layer to the last
    ``sliding_window`` positions.
    """

    model_type: ClassVar[str] = "mistral"
    # Mistral has no bias options: class-level constants, never written to config.json
    attention_bias: ClassVar[bool] = False
    mlp_bias: ClassVar[bool] = False

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int = 14336,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = 8,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 4096 * 32,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        tie_word_embeddings: bool = False,
        rope_parameters: dict[str, Any] | None = None,
        sliding_window: int | None = 4096,
        attention_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.sliding_window = sliding_window
        kwargs.pop("attention_bias", None)
        kwargs.pop("mlp_bias", None)
        super().__init__(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads, hidden_act=hidden_act,
            max_position_embeddings=max_position_embeddings, initializer_range=initializer_range,
            rms_norm_eps=rms_norm_eps, use_cache=use_cache, pad_token_id=pad_token_id,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings,
            rope_parameters=rope_parameters, attention_dropout=attention_dropout, head_dim=head_dim, **kwargs,
        )
        # LlamaConfig.__init__ set these on the instance; Mistral has none
        for key in ("attention_bias", "mlp_bias", "pretraining_tp"):
            self.__dict__.pop(key, None)


class MistralModel(LlamaModel):
    config_class = MistralConfig
    _no_split_modules = ("LlamaDecoderLayer",)


class MistralForCausalLM(LlamaForCausalLM):
    config_class = MistralConfig
    base_model_class = MistralModel


class MistralForSequenceClassification(LlamaForSequenceClassification):
    config_class = MistralConfig
    base_model_class = MistralModel


class MistralForTokenClassification(LlamaForTokenClassification):
    config_class = MistralConfig
    base_model_class = MistralModel


class MistralForQuestionAnswering(LlamaForQuestionAnswering):
    """Mistral's question-answering head keeps its base model under ``model`` (unlike Llama's)."""

    config_class = MistralConfig
    base_model_class = MistralModel
    base_model_prefix = "model"
    checkpoint_rules = ((r"^transformer\.", "model."),)
