"""The reference's model-type tables (``CONFIG_MAPPING``, ``MODEL_FOR_*_MAPPING`` and their ``*_NAMES``).

Scripts read them to list the model types a head supports (``MODEL_FOR_CAUSAL_LM_MAPPING.keys()``)
or to build a config from scratch (``CONFIG_MAPPING[model_type]()``). They are views of
``models.auto.MODEL_REGISTRY``: classes are imported on first access.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from openformers.models.auto import MODEL_REGISTRY

_HEAD_TABLES = {
    "MODEL": "base",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION": "sequence-classification",
    "MODEL_FOR_TOKEN_CLASSIFICATION": "token-classification",
    "MODEL_FOR_QUESTION_ANSWERING": "question-answering",
    "MODEL_FOR_MASKED_LM": "masked-lm",
    "MODEL_FOR_CAUSAL_LM": "causal-lm",
}


def _load(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


class _ConfigMapping(Mapping):
    """model_type -> config class."""

    def __getitem__(self, model_type: str) -> type:
        if model_type not in MODEL_REGISTRY:
            raise KeyError(f"{model_type!r} (supported model types: {sorted(MODEL_REGISTRY)})")
        module, config_name, _ = MODEL_REGISTRY[model_type]
        return _load(module, config_name)

    def __iter__(self) -> Iterator[str]:
        return iter(MODEL_REGISTRY)

    def __len__(self) -> int:
        return len(MODEL_REGISTRY)


class _ModelMapping(Mapping):
    """config class -> model class for one head (the reference keys these tables by config class)."""

    def __init__(self, head: str) -> None:
        self._head = head

    def _types(self) -> list[str]:
        return [t for t, (_, _, heads) in MODEL_REGISTRY.items() if self._head in heads]

    def __getitem__(self, config_class: Any) -> type:
        model_type = config_class if isinstance(config_class, str) else getattr(config_class, "model_type", None)
        if model_type not in self._types():
            raise KeyError(f"{config_class!r} has no {self._head} model (model types with one: {self._types()})")
        module, _, heads = MODEL_REGISTRY[model_type]
        return _load(module, heads[self._head])

    def __iter__(self) -> Iterator[type]:
        for model_type in self._types():
            module, config_name, _ = MODEL_REGISTRY[model_type]
            yield _load(module, config_name)

    def __len__(self) -> int:
        return len(self._types())

    def __contains__(self, key: object) -> bool:
        model_type = key if isinstance(key, str) else getattr(key, "model_type", None)
        return model_type in self._types()


CONFIG_MAPPING: Mapping[str, type] = _ConfigMapping()
CONFIG_MAPPING_NAMES: dict[str, str] = {t: config for t, (_, config, _) in MODEL_REGISTRY.items()}

MODEL_MAPPING = _ModelMapping("base")
MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING = _ModelMapping("sequence-classification")
MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING = _ModelMapping("token-classification")
MODEL_FOR_QUESTION_ANSWERING_MAPPING = _ModelMapping("question-answering")
MODEL_FOR_MASKED_LM_MAPPING = _ModelMapping("masked-lm")
MODEL_FOR_CAUSAL_LM_MAPPING = _ModelMapping("causal-lm")


def _names(head: str) -> dict[str, str]:
    return {t: heads[head] for t, (_, _, heads) in MODEL_REGISTRY.items() if head in heads}


MODEL_MAPPING_NAMES = _names("base")
MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES = _names("sequence-classification")
MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES = _names("token-classification")
MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES = _names("question-answering")
MODEL_FOR_MASKED_LM_MAPPING_NAMES = _names("masked-lm")
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = _names("causal-lm")

__all__ = ["CONFIG_MAPPING", "CONFIG_MAPPING_NAMES"] + [
    f"{prefix}{suffix}" for prefix in _HEAD_TABLES for suffix in ("_MAPPING", "_MAPPING_NAMES")
]
