"""Quantization configs and quantized layers.

``from_pretrained(..., quantization_config=cfg)`` calls ``quantize_model(model, cfg)`` after
loading; a config may also take part in loading itself (``plan_gguf`` / ``prepare_model``, see
``GGUFQuantizationConfig``).
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GGUFQuantizationConfig": "openformers.quantization.gguf_linear",
    "QuantizedLinear": "openformers.quantization.gguf_linear",
}


def quantize_model(model: Any, quantization_config: Any) -> Any:
    """Apply ``quantization_config`` to a loaded model (in place) and return it."""
    apply = getattr(quantization_config, "quantize_model", None)
    if apply is None:
        raise TypeError(
            f"quantization_config of type {type(quantization_config).__name__} is not supported; "
            f"use openformers.quantization.GGUFQuantizationConfig"
        )
    apply(model)
    return model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'openformers.quantization' has no attribute {name!r}")


__all__ = ["GGUFQuantizationConfig", "QuantizedLinear", "quantize_model"]
