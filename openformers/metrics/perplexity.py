"""Perplexity of texts under a causal language model."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import Metric


def _token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Ids without special tokens, from an openformers/HF tokenizer or a `tokenizers.Tokenizer`."""
    if hasattr(tokenizer, "encode_batch") and not callable(getattr(tokenizer, "batch_decode", None)):
        return [list(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    if callable(tokenizer):
        encoded = tokenizer(texts, add_special_tokens=False)
        ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
        return [list(map(int, x)) for x in ids]
    raise TypeError("perplexity: `tokenizer` must be callable (returning input_ids) or a tokenizers.Tokenizer.")


class Perplexity(Metric):
    """Per-text perplexity exp(mean token negative log-likelihood) and their mean.

    Pass ``model_id`` (a local path or cached hub id, loaded with openformers'
    AutoModelForCausalLM / AutoTokenizer) or an already built ``model`` and ``tokenizer``.
    Only one batch of logits is held in memory at a time.
    """

    name = "perplexity"
    input_names = ("predictions",)

    def _compute(self, predictions: Sequence[str], model_id: str | None = None, batch_size: int = 16,
                 add_start_token: bool = True, device: str | None = None, max_length: int | None = None,
                 model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
        import torch

        texts = list(predictions)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("perplexity: every prediction must be a string.")
        if batch_size < 1:
            raise ValueError(f"perplexity: `batch_size` must be >= 1, got {batch_size}.")
        if model is None or tokenizer is None:
            if model_id is None:
                raise ValueError("perplexity: pass `model_id=` (path or model name) or both `model=` and `tokenizer=`.")
            if model is None:
                from openformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_pretrained(model_id)
            if tokenizer is None:
                from openformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(model_id)
        if device is not None:
            if device not in ("cpu", "cuda", "gpu") and not str(device).startswith(("cuda:", "mps")):
                raise ValueError(f"perplexity: `device` must be 'cpu', 'cuda' or 'gpu', got {device!r}.")
            model = model.to("cuda" if device == "gpu" else device)
        params = next(iter(model.parameters()), None)
        dev = params.device if params is not None else torch.device("cpu")

        ids = _token_ids(tokenizer, texts)
        bos = getattr(tokenizer, "bos_token_id", None)
        if add_start_token:
            if bos is None:
                raise ValueError("perplexity: the tokenizer has no bos_token_id; pass add_start_token=False.")
            limit = None if max_length is None else max_length - 1
            ids = [[bos] + (x if limit is None else x[:limit]) for x in ids]
        elif max_length is not None:
            ids = [x[:max_length] for x in ids]
        if any(len(x) < 2 for x in ids):
            raise ValueError("perplexity: every text needs at least one token (two with add_start_token=False); "
                             "remove empty strings.")

        was_training = getattr(model, "training", False)
        model.eval()
        ppls: list[float] = []
        try:
            with torch.inference_mode():
                for start in range(0, len(ids), batch_size):
                    batch = ids[start:start + batch_size]
                    width = max(map(len, batch))
                    input_ids = torch.zeros(len(batch), width, dtype=torch.long)
                    mask = torch.zeros(len(batch), width, dtype=torch.long)
                    for row, seq in enumerate(batch):  # right padding keeps positions of real tokens
                        input_ids[row, : len(seq)] = torch.tensor(seq)
                        mask[row, : len(seq)] = 1
                    input_ids, mask = input_ids.to(dev), mask.to(dev)
                    out = model(input_ids=input_ids, attention_mask=mask)
                    logits = out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)
                    logits = logits[:, :-1].float()
                    labels, label_mask = input_ids[:, 1:], mask[:, 1:].float()
                    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
                    ppls.extend(torch.exp((nll * label_mask).sum(1) / label_mask.sum(1)).tolist())
        finally:
            if was_training:
                model.train()
        return {"perplexities": ppls, "mean_perplexity": float(np.mean(ppls))}
