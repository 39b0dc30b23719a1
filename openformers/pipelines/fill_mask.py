"""``fill-mask``: the most likely tokens for each mask token of a text."""
from __future__ import annotations

import logging
from typing import Any

import torch

from .base import Pipeline

logger = logging.getLogger(__name__)


class FillMaskPipeline(Pipeline):
    """Predict the token behind each ``tokenizer.mask_token`` with a masked-LM model.

    ``top_k`` (default 5) predictions per mask, each ``{"score", "token", "token_str",
    "sequence"}``; with several masks in one text, one list per mask. ``targets`` restricts the
    predictions to the given words (a word missing from the vocabulary is replaced by its first
    token, with a warning).
    """

    task = "fill-mask"
    token_outputs = ("logits",)

    def _sanitize_parameters(self, top_k: int | None = None, targets: Any = None,
                             tokenizer_kwargs: dict[str, Any] | None = None,
                             **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        self._unknown_kwargs(kwargs)
        if self.tokenizer.mask_token_id is None:
            raise ValueError("the fill-mask pipeline needs a tokenizer with a mask token; this tokenizer has none")
        post: dict[str, Any] = {}
        if targets is not None:
            post["target_ids"] = self._target_ids(targets)
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive int, got {top_k!r}")
            post["top_k"] = top_k
        return {"tokenizer_kwargs": tokenizer_kwargs or {}}, {}, post

    def _target_ids(self, targets: Any) -> list[int]:
        if isinstance(targets, str):
            targets = [targets]
        vocab = self.tokenizer.get_vocab()
        ids: list[int] = []
        for target in targets:
            tid = vocab.get(target)
            if tid is None:
                pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
                if not pieces:
                    logger.warning("target %r is not in the vocabulary and tokenizes to nothing; ignored", target)
                    continue
                tid = pieces[0]
                logger.warning("target %r is not in the vocabulary; using its first token %r instead",
                               target, self.tokenizer.convert_ids_to_tokens(tid))
            if tid not in ids:
                ids.append(tid)
        if not ids:
            raise ValueError(f"none of the targets {targets!r} maps to a token; give at least one usable target")
        return ids

    def __call__(self, inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
        out = super().__call__(inputs, *args, **kwargs)
        if isinstance(inputs, list) and len(inputs) == 1:
            return out[0]
        return out

    def preprocess(self, text: str, tokenizer_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(text, str):
            raise ValueError(f"fill-mask takes a string, got {type(text).__name__}")
        enc = self.tokenizer(text, **tokenizer_kwargs)
        if self.tokenizer.mask_token_id not in enc["input_ids"]:
            raise ValueError(f"no mask token ({self.tokenizer.mask_token}) found in the input {text!r}")
        return [dict(enc.data)]

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, outputs: dict[str, Any], top_k: int = 5, target_ids: list[int] | None = None) -> Any:
        input_ids = torch.as_tensor(outputs["input_ids"])
        positions = torch.nonzero(input_ids == self.tokenizer.mask_token_id).squeeze(-1)
        probs = outputs["logits"][positions].float().softmax(dim=-1)
        if target_ids is not None:
            probs = probs[:, target_ids]
            top_k = min(top_k, len(target_ids))
        values, predictions = probs.topk(top_k)
        single = len(positions) == 1
        pad = self.tokenizer.pad_token_id
        results = []
        for i, (vals, preds) in enumerate(zip(values.tolist(), predictions.tolist())):
            row = []
            for v, p in zip(vals, preds):
                token = target_ids[p] if target_ids is not None else p
                ids = input_ids.clone()
                ids[positions[i]] = token
                if pad is not None:
                    ids = ids[ids != pad]
                row.append({"score": v, "token": token, "token_str": self.tokenizer.decode([token]),
                            "sequence": self.tokenizer.decode(ids.tolist(), skip_special_tokens=single)})
            results.append(row)
        return results[0] if single else results
