"""Starcoder2: Llama's attention (rotary, grouped-query, a sliding window over every layer when set) with
projection biases on q/k/v/o (``use_bias``), two known blocks of its own (``modules/blocks.py``): LayerNorms
with a weight and a bias (``norm_epsilon``) and a plain MLP ``c_proj(act(c_fc(x)))`` with biases; dropout of the
embeddings and of the attention's and MLP's outputs in training (``embedding_dropout``, ``residual_dropout``).
The embeddings are tied to the LM head by default.
"""
from __future__ import annotations

from typing import Any, ClassVar

from openformers.models.llama.config import LlamaConfig
from openformers.models.llama.heads import LlamaForSequenceClassification, LlamaForTokenClassification
from openformers.models.llama.model import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from openformers.modules.blocks import DecoderBlocks

# llama.cpp's GGUF names ("starcoder2" architecture): Llama's block names but for the plain MLP (ffn_up is c_fc,
# ffn_down is c_proj, no ffn_gate); every norm has a bias (attn_norm, ffn_norm, output_norm) and the projections
# one when use_bias; q and k rows in the Hugging Face order (no rotary reordering); no LM head when tied
GGUF_ARCHITECTURE = "starcoder2"
GGUF_BLOCK_NAMES: dict[str, str] = {"ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}
GGUF_NORM_OFFSET = 0.0
GGUF_CONFIG = {"hidden_act": "gelu_pytorch_tanh"}  # what the file's metadata does not say
GGUF_KEYS = {"attention.layer_norm_epsilon": "norm_epsilon"}  # metadata of its own (after "starcoder2.")
GGUF_ABSENT = ("ffn_gate",)  # Llama block kinds its files do not hold
GGUF_NORM_BIASES = True  # every norm's bias is in the file
GGUF_BIAS_FIELD = "use_bias"  # the config field set by whether the projections' biases are in the file


class Starcoder2Config(LlamaConfig):
    """Configuration of a Starcoder2 model; defaults as in transformers (Starcoder2-3B's shape).

    ``use_bias`` puts a bias on every projection (q/k/v/o, ``c_fc``, ``c_proj``); Llama's ``attention_bias`` and
    ``mlp_bias`` read it, and ``rms_norm_eps`` reads ``norm_epsilon`` (the LayerNorms' epsilon).
    ``sliding_window`` (None: full attention) limits every layer to the last ``sliding_window`` positions.
    """

    model_type: ClassVar[str] = "starcoder2"
    attribute_map: ClassVar[dict[str, str]] = {
        "rms_norm_eps": "norm_epsilon", "attention_bias": "use_bias", "mlp_bias": "use_bias"}
    _fixed_fields: ClassVar[tuple[str, ...]] = ("pretraining_tp",)

    def __init__(
        self,
        vocab_size: int = 49152,
        hidden_size: int = 3072,
        intermediate_size: int = 12288,
        num_hidden_layers: int = 30,
        num_attention_heads: int = 24,
        num_key_value_heads: int | None = 2,
        hidden_act: str = "gelu_pytorch_tanh",
        max_position_embeddings: int = 4096,
        initializer_range: float = 0.018042,
        norm_epsilon: float = 1e-5,
        use_cache: bool = True,
        bos_token_id: int | None = 50256,
        eos_token_id: int | list[int] | None = 50256,
        pad_token_id: int | None = None,
        rope_parameters: dict[str, Any] | None = None,
        sliding_window: int | None = None,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        use_bias: bool = True,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        for name, p in (("attention_dropout", attention_dropout), ("residual_dropout", residual_dropout),
                        ("embedding_dropout", embedding_dropout)):
            if not 0.0 <= float(p) < 1.0:
                raise ValueError(f"Starcoder2Config({name}={p}): a dropout probability must be in [0, 1)")
        self.sliding_window = sliding_window
        self.residual_dropout = float(residual_dropout)
        self.embedding_dropout = float(embedding_dropout)
        for key in ("attention_bias", "mlp_bias", "rms_norm_eps", *self._fixed_fields):
            kwargs.pop(key, None)
        super().__init__(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads, hidden_act=hidden_act,
            max_position_embeddings=max_position_embeddings, initializer_range=initializer_range,
            rms_norm_eps=norm_epsilon, use_cache=use_cache, pad_token_id=pad_token_id,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings,
            rope_parameters=rope_parameters, attention_bias=use_bias, mlp_bias=use_bias,
            attention_dropout=attention_dropout, **kwargs,
        )
        for key in self._fixed_fields:
            self.__dict__.pop(key, None)


class Starcoder2DecoderLayer(LlamaDecoderLayer):
    blocks = DecoderBlocks(norm="layer", mlp="plain")


class Starcoder2Model(LlamaModel):
    config_class = Starcoder2Config
    decoder_layer_class = Starcoder2DecoderLayer
    _no_split_modules = ("Starcoder2DecoderLayer",)


class Starcoder2ForCausalLM(LlamaForCausalLM):
    config_class = Starcoder2Config
    base_model_class = Starcoder2Model
    _no_split_modules = ("Starcoder2DecoderLayer",)


class Starcoder2ForSequenceClassification(LlamaForSequenceClassification):
    config_class = Starcoder2Config
    base_model_class = Starcoder2Model
    _no_split_modules = ("Starcoder2DecoderLayer",)


class Starcoder2ForTokenClassification(LlamaForTokenClassification):
    config_class = Starcoder2Config
    base_model_class = Starcoder2Model
    _no_split_modules = ("Starcoder2DecoderLayer",)
