"""Key/value caches for decoding. Layers call ``cache.update(layer_idx, k, v) -> (k, v)``.

Tensors are [batch, kv_heads, seq, head_dim].
"""
from __future__ import annotations

import torch


class Cache:
    """Interface every cache implements."""

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def get_seq_length(self, layer_idx: int = 0) -> int:
        raise NotImplementedError

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError


class DynamicCache(Cache):
    """Grows by concatenation; the default for ``use_cache=True``."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        elif layer_idx < len(self.keys):
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=-2)
        else:
            raise IndexError(f"cache update for layer {layer_idx} before layer {len(self.keys)}")
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].shape[-2] if layer_idx < len(self.keys) else 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for i in range(len(self.keys)):
            self.keys[i] = self.keys[i].index_select(0, beam_idx.to(self.keys[i].device))
            self.values[i] = self.values[i].index_select(0, beam_idx.to(self.values[i].device))

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` positions (used by assisted decoding and stop strings)."""
        for i in range(len(self.keys)):
            self.keys[i] = self.keys[i][..., :length, :]
            self.values[i] = self.values[i][..., :length, :]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[layer_idx], self.values[layer_idx]

    def __iter__(self):
        return iter(zip(self.keys, self.values))

    @classmethod
    def from_legacy_cache(cls, past: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None) -> "DynamicCache":
        cache = cls()
        for k, v in past or ():
            cache.keys.append(k)
            cache.values.append(v)
        return cache

    def to_legacy_cache(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        return tuple(zip(self.keys, self.values))


def as_cache(past_key_values: object, use_cache: bool) -> Cache | None:
    """Normalise the ``past_key_values`` argument: a Cache, a legacy tuple, or None."""
    if isinstance(past_key_values, Cache):
        return past_key_values
    if past_key_values is not None:
        return DynamicCache.from_legacy_cache(past_key_values)  # type: ignore[arg-type]
    return DynamicCache() if use_cache else None
