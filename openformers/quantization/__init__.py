"""Quantization configs and quantized layers.

* ``BitsAndBytesConfig`` (8-bit, 4-bit NF4/FP4): ``from_pretrained(..., quantization_config=cfg)``
  swaps empty quantized layers in before loading (``prepare_model``) and quantizes each float
  weight as it streams in; ``quantize_model(model, cfg)`` does the same for a model in memory.
* ``GGUFQuantizationConfig``: keeps a GGUF model's 4-bit blocks (``plan_gguf`` /
  ``prepare_model``, see ``gguf_linear``).

A quantized model saved with ``save_pretrained`` has its config in ``config.json``;
``from_pretrained`` reads it back with ``resolve_quantization_config`` and loads the packed
tensors as they are.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger("openformers")

_LAZY = {
    "GGUFQuantizationConfig": "openformers.quantization.gguf_linear",
    "QuantizedLinear": "openformers.quantization.gguf_linear",
    "BitsAndBytesConfig": "openformers.quantization.bnb_config",
    "Linear4bit": "openformers.quantization.bnb_linear",
    "Linear8bitLt": "openformers.quantization.bnb_linear_8bit",
    "quantized_weight_bytes": "openformers.quantization.bnb_linear",
}


def quantize_model(model: Any, quantization_config: Any) -> Any:
    """Apply ``quantization_config`` to a loaded model (in place) and return it."""
    apply = getattr(quantization_config, "quantize_model", None)
    if apply is None:
        raise TypeError(
            f"quantization_config of type {type(quantization_config).__name__} is not supported; "
            f"use openformers.BitsAndBytesConfig or openformers.quantization.GGUFQuantizationConfig"
        )
    apply(model)
    return model


def resolve_quantization_config(user_config: Any, model_config: Any) -> Any:
    """The quantization config a load uses: the checkpoint's (already quantized) or the user's.

    A ``config.json`` written for a quantized model holds ``quantization_config``; its tensors
    are packed already, so that config wins over one passed by the caller (as in transformers)
    and is marked pre-quantized. A dict passed by the caller is turned into its config class.
    """
    from openformers.quantization.bnb_config import BitsAndBytesConfig

    saved = getattr(model_config, "quantization_config", None)
    if isinstance(user_config, dict):
        user_config = _from_dict(user_config, "quantization_config argument")
    if isinstance(saved, dict) and saved.get("quant_method") == BitsAndBytesConfig.quant_method:
        checkpoint = BitsAndBytesConfig.from_dict(saved)
        checkpoint._pre_quantized = True
        if user_config is not None and user_config != checkpoint:
            logger.warning(
                "The checkpoint is already quantized (%s); the quantization_config passed to from_pretrained is ignored",
                checkpoint.quantization_method(),
            )
        return checkpoint
    if isinstance(saved, dict) and saved.get("quant_method") == "gguf":
        from openformers.quantization.gguf_linear import GGUFQuantizationConfig

        checkpoint = GGUFQuantizationConfig.from_dict(saved)
        checkpoint._pre_quantized = True  # the 4-bit layers are in the checkpoint
        if user_config is not None and user_config != checkpoint:
            logger.warning("The checkpoint is already quantized (gguf 4-bit); the quantization_config passed to from_pretrained is ignored")
        return checkpoint
    return user_config


def _from_dict(data: dict[str, Any], where: str) -> Any:
    from openformers.quantization.bnb_config import BitsAndBytesConfig

    if data.get("quant_method", BitsAndBytesConfig.quant_method) == BitsAndBytesConfig.quant_method:
        return BitsAndBytesConfig.from_dict(data)
    raise ValueError(f"{where}: quant_method={data.get('quant_method')!r} is not supported; use 'bitsandbytes'")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'openformers.quantization' has no attribute {name!r}")


__all__ = [
    "BitsAndBytesConfig", "GGUFQuantizationConfig", "Linear4bit", "Linear8bitLt", "QuantizedLinear",
    "quantize_model", "quantized_weight_bytes", "resolve_quantization_config",
]
