"""Llama configuration (also the base of the Mistral and Qwen2 configurations)."""
from __future__ import annotations

from typing import Any, ClassVar

from openformers.core.config import PretrainedConfig
from openformers.modules.rotary import standardize_rope_parameters


class LlamaConfig(PretrainedConfig):
    """Configuration of a Llama model; defaults are those of Llama-7B, as in transformers.

    Rotary settings live in ``rope_parameters`` (the transformers 5 form); the older
    ``rope_theta`` and ``rope_scaling`` arguments and attributes read and write the same dict.
    ``pretraining_tp`` is kept for round trips and otherwise ignored.
    """

    model_type: ClassVar[str] = "llama"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        pretraining_tp: int | None = 1,
        tie_word_embeddings: bool = False,
        rope_parameters: dict[str, Any] | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        mlp_bias: bool = False,
        head_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.pretraining_tp = pretraining_tp
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self._set_rope(rope_parameters, kwargs)
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self._validate()

    # -- rope --------------------------------------------------------------------------
    def _set_rope(self, rope_parameters: dict[str, Any] | None, kwargs: dict[str, Any]) -> None:
        self.rope_parameters = standardize_rope_parameters(
            rope_parameters,
            rope_scaling=kwargs.pop("rope_scaling", None),
            rope_theta=kwargs.pop("rope_theta", None),
            partial_rotary_factor=kwargs.pop("partial_rotary_factor", None),
            max_position_embeddings=self.max_position_embeddings,
            original_max_position_embeddings=kwargs.get("original_max_position_embeddings"),
        )

    @property
    def rope_theta(self) -> float:
        return self.rope_parameters["rope_theta"]

    @rope_theta.setter
    def rope_theta(self, value: float) -> None:
        self.rope_parameters = {**self.rope_parameters, "rope_theta": value}

    @property
    def rope_scaling(self) -> dict[str, Any]:
        """Alias of ``rope_parameters`` (the name used before transformers 5)."""
        return self.rope_parameters

    @rope_scaling.setter
    def rope_scaling(self, value: dict[str, Any] | None) -> None:
        self.rope_parameters = standardize_rope_parameters(
            None, rope_scaling=value, rope_theta=self.rope_theta, max_position_embeddings=self.max_position_embeddings
        )

    def _validate(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}) for grouped-query attention"
            )
