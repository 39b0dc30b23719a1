"""``feature-extraction``: token embeddings, or one pooled sentence embedding per text."""
from __future__ import annotations

from typing import Any

import torch

from .base import Pipeline

POOLINGS = ("mean", "cls", "max")


class FeatureExtractionPipeline(Pipeline):
    """Hidden states of a model for each text.

    By default each result is the last hidden state as nested lists ``[1, tokens, hidden]`` (a
    tensor with ``return_tensors=True``), as in the Hugging Face pipeline. ``pooling="mean"``
    (or ``"cls"``, ``"max"``) returns one sentence embedding ``[hidden]`` per text instead (mean
    over the real tokens, as sentence-transformers does for MiniLM); ``normalize=True`` scales it
    to unit length.
    """

    task = "feature-extraction"
    token_outputs = ("hidden",)

    def _sanitize_parameters(self, truncation: Any = None, tokenize_kwargs: dict[str, Any] | None = None,
                             return_tensors: bool | None = None, pooling: str | None = None,
                             normalize: bool | None = None,
                             **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        self._unknown_kwargs(kwargs)
        tok = dict(tokenize_kwargs or {})
        if truncation is not None:
            if "truncation" in tok:
                raise ValueError("truncation is given twice: as an argument and inside tokenize_kwargs")
            tok["truncation"] = truncation
        fwd: dict[str, Any] = {}
        if pooling is not None:
            if pooling not in POOLINGS:
                raise ValueError(f"pooling must be one of {list(POOLINGS)} or None, got {pooling!r}")
            fwd["pooling"] = pooling
        if normalize is not None:
            fwd["normalize"] = bool(normalize)
        post = {} if return_tensors is None else {"return_tensors": bool(return_tensors)}
        return {"tokenize_kwargs": tok}, fwd, post

    def preprocess(self, text: str, tokenize_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(text, str) and not text:
            raise ValueError("the input text is an empty string; give at least one character")
        return [dict(self.tokenizer(text, **tokenize_kwargs).data)]

    def _forward(self, model_inputs: dict[str, torch.Tensor], pooling: str | None = None,
                 normalize: bool = False) -> dict[str, Any]:
        hidden = self.model(**model_inputs)[0]  # [batch, seq, hidden] (or logits for a head model)
        if pooling is None:
            if normalize:
                raise ValueError("normalize=True needs a pooling (e.g. pooling=\"mean\")")
            return {"hidden": hidden}
        mask = model_inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        elif pooling == "max":
            pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
        else:
            pooled = hidden[:, 0]
        if normalize:
            pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)
        return {"pooled": pooled}

    def postprocess(self, outputs: dict[str, Any], return_tensors: bool = False) -> Any:
        value = outputs["pooled"] if "pooled" in outputs else outputs["hidden"].unsqueeze(0)
        return value if return_tensors else value.tolist()
