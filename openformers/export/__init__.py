"""Export: the way out of the library (ONNX graphs and the onnxruntime models that run them;
CoreML programs of encoders; GGUF files for llama.cpp).

Names are imported lazily (PEP 562), so ``import openformers.export`` loads neither torch's
exporter nor onnxruntime until a name is used.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "to_onnx": "openformers.export.onnx",
    "to_coreml": "openformers.export.coreml",
    "save_gguf": "openformers.export.gguf",
    "ORTModel": "openformers.export.ort",
    "ORTModelForFeatureExtraction": "openformers.export.ort",
    "ORTModelForSequenceClassification": "openformers.export.ort",
    "ORTModelForTokenClassification": "openformers.export.ort",
    "ORTModelForQuestionAnswering": "openformers.export.ort",
    "ORTModelForMaskedLM": "openformers.export.ort",
    "ORTModelForCausalLM": "openformers.export.ort",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'openformers.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
