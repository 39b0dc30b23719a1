"""Entry points that ``core/`` calls and the layers above it provide.

``core/`` imports nothing above it. Where the model base needs a piece that lives higher up (generation,
GGUF model reading, quantization, the ``model_type`` registry), the package that owns the piece is named
here by the top-level ``openformers`` package (:func:`provide`), and ``core/`` asks for it by an abstract
name (:func:`get`); the provider's module is imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_PROVIDERS: dict[str, tuple[str, str]] = {}


def provide(name: str, module: str, attribute: str) -> None:
    """Register ``module.attribute`` as the provider of ``name`` (a later call replaces an earlier one)."""
    _PROVIDERS[name] = (module, attribute)


def get(name: str) -> Any:
    """The provider of ``name``; an error names what is missing when no layer registered one."""
    try:
        module, attribute = _PROVIDERS[name]
    except KeyError:
        raise LookupError(f"no provider is registered for {name!r} (the openformers package registers them on import; "
                          f"known: {sorted(_PROVIDERS)})") from None
    return getattr(importlib.import_module(module), attribute)
