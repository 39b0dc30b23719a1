"""``text-classification`` (alias ``sentiment-analysis``): labels and scores for texts or text pairs."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Pipeline

_FUNCTIONS = ("sigmoid", "softmax", "none")
_UNSET = object()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def tokenize_text_or_pair(tokenizer: Any, item: Any, tokenizer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Encode a text, a ``{"text": ..., "text_pair": ...}`` dict or a ``[text, pair]`` list as token lists."""
    if isinstance(item, dict):
        unknown = set(item) - {"text", "text_pair"}
        if "text" not in item or unknown:
            raise ValueError(f'a text pair is given as {{"text": ..., "text_pair": ...}}; got keys {sorted(item)}')
        text, pair = item["text"], item.get("text_pair")
    elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(t, str) for t in item):
        text, pair = item
    elif isinstance(item, str):
        text, pair = item, None
    else:
        raise ValueError(f"expected a string or a text pair {{'text': ..., 'text_pair': ...}}, got {type(item).__name__}")
    if not text:
        raise ValueError("the input text is an empty string; give at least one character")
    enc = tokenizer(text, text_pair=pair, **tokenizer_kwargs)
    return dict(enc.data)


class TextClassificationPipeline(Pipeline):
    """Classify texts (or text pairs) with a sequence-classification model.

    ``top_k``: unset returns the best label only (``[{"label", "score"}]`` per input); an int
    returns that many labels sorted by score; ``None`` returns all of them. ``function_to_apply``:
    ``"softmax"``, ``"sigmoid"`` or ``"none"``; by default chosen from ``config.problem_type``
    and ``num_labels`` (regression: none; multi-label or one label: sigmoid; else softmax).
    """

    task = "text-classification"

    def _sanitize_parameters(self, function_to_apply: str | None = None, top_k: Any = _UNSET,
                             **tokenizer_kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        post: dict[str, Any] = {}
        if top_k is not _UNSET:
            if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"top_k must be a positive int or None (all labels), got {top_k!r}")
            post["top_k"] = top_k
        if function_to_apply is not None:
            name = str(getattr(function_to_apply, "value", function_to_apply)).lower()
            if name not in _FUNCTIONS:
                raise ValueError(f"function_to_apply must be one of {list(_FUNCTIONS)}, got {function_to_apply!r}")
            post["function_to_apply"] = name
        return dict(tokenizer_kwargs), {}, post

    def __call__(self, inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
        result = super().__call__(inputs, *args, **kwargs)
        legacy = "top_k" not in kwargs and "top_k" not in self._postprocess_params
        if legacy and isinstance(inputs, str):
            return [result]
        return result

    def _is_single(self, inputs: Any) -> bool:
        if isinstance(inputs, (list, tuple)) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs):
            return False  # a list of two texts is a batch; pairs are dicts
        return super()._is_single(inputs)

    def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> list[dict[str, Any]]:
        return [tokenize_text_or_pair(self.tokenizer, inputs, tokenizer_kwargs)]

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"logits": self.model(**model_inputs).logits}

    def _default_function(self) -> str:
        config = self.model.config
        if config.problem_type == "regression":
            return "none"
        if config.problem_type == "multi_label_classification" or config.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def postprocess(self, outputs: dict[str, Any], function_to_apply: str | None = None, top_k: Any = _UNSET) -> Any:
        logits = outputs["logits"].float().numpy()
        fn = function_to_apply or self._default_function()
        scores = _softmax(logits) if fn == "softmax" else _sigmoid(logits) if fn == "sigmoid" else logits
        id2label = self.model.config.id2label
        if top_k is _UNSET:
            best = int(scores.argmax())
            return {"label": id2label[best], "score": float(scores[best])}
        ranked = sorted(({"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)),
                        key=lambda d: d["score"], reverse=True)
        return ranked if top_k is None else ranked[:top_k]
