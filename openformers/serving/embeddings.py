"""Sentence embeddings for ``POST /v1/embeddings``: an encoder, mean pooling over real tokens, L2 norm
(what sentence-transformers computes for MiniLM-style models)."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch


class Embedder:
    """An encoder and its tokenizer, loaded once; :meth:`embed_ids` is safe to call from several threads."""

    def __init__(self, name_or_path: str, dtype: str = "float32", batch_size: int = 32) -> None:
        from openformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModel.from_pretrained(name_or_path, dtype=dtype).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None) or 512
        self.max_length = int(min(limit, getattr(self.tokenizer, "model_max_length", limit) or limit))
        self.batch_size = batch_size
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self._lock = threading.Lock()

    def embed_ids(self, ids: list[list[int]]) -> np.ndarray:
        """[len(ids), hidden] float32, each row of unit length."""
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(ids), self.batch_size):
                batch = [seq[: self.max_length] for seq in ids[start : start + self.batch_size]]
                width = max(len(seq) for seq in batch)
                input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, seq in enumerate(batch):
                    input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                    mask[row, : len(seq)] = 1
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
                weights = mask.unsqueeze(-1).float()
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out).numpy()

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_ids([self.tokenizer(t, truncation=True, max_length=self.max_length)["input_ids"] for t in texts])
