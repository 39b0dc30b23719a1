"""Key/value caches for decoding. Layers call ``cache.update(layer_idx, k, v) -> (k, v)``.

Tensors are [batch, kv_heads, seq, head_dim].
"""
from __future__ import annotations

import torch


class Cache:
    """Interface every cache implements."""

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement update(layer_idx, key, value)")

    def get_seq_length(self, layer_idx: int = 0) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement get_seq_length(layer_idx)")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement reorder_cache(beam_idx) for beam search")


class DynamicCache(Cache):
    """Grows as positions arrive; the default for ``use_cache=True``.

    ``keys[i]`` / ``values[i]`` are the filled part of a per-layer buffer with spare room at the
    end (the capacity doubles when full), so a decode step writes its new position in place
    instead of copying the whole cache. Anything that replaces ``keys[i]`` with a tensor of its
    own (``reorder_cache``, a legacy tuple) simply moves the cache to a new buffer at the next
    update.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = []

    @staticmethod
    def _room(buf: torch.Tensor | None, filled: torch.Tensor, add: int, dtype: torch.dtype) -> torch.Tensor:
        """``buf`` when ``filled`` is its start and ``add`` more positions fit, else a new buffer (twice the
        length needed, at least 64 positions) holding a copy of ``filled``."""
        n = filled.shape[-2]
        fits = (
            buf is not None and filled.data_ptr() == buf.data_ptr() and filled.stride() == buf.stride()
            and filled.shape[:-2] == buf.shape[:-2] and filled.shape[-1] == buf.shape[-1] and buf.dtype == dtype
            and n + add <= buf.shape[-2]
        )
        if not fits:
            shape = (*filled.shape[:-2], max(2 * (n + add), 64), filled.shape[-1])
            buf = torch.empty(shape, dtype=dtype, device=filled.device)
            buf[..., :n, :].copy_(filled)
        return buf

    @classmethod
    def _append(cls, buf: torch.Tensor | None, filled: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(buffer, filled + new as a view of it)."""
        n, add = filled.shape[-2], new.shape[-2]
        buf = cls._room(buf, filled, add, new.dtype)
        buf[..., n : n + add, :].copy_(new)
        return buf, buf[..., : n + add, :]

    def reserve(self, layer_idx: int, add: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Room for ``add`` new positions of a cached layer, to be written in place: ``(key buffer, value
        buffer, filled length)``; the buffers are ``[b, kv_heads, capacity, d]`` and positions from the
        filled length on are free. :meth:`advance` then counts the written positions in."""
        while len(self._buffers) < len(self.keys):
            self._buffers.append(None)
        bufs = self._buffers[layer_idx]
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        kbuf = self._room(bufs[0] if bufs else None, keys, add, keys.dtype)
        vbuf = self._room(bufs[1] if bufs else None, values, add, values.dtype)
        self._buffers[layer_idx] = (kbuf, vbuf)
        n = keys.shape[-2]
        self.keys[layer_idx], self.values[layer_idx] = kbuf[..., :n, :], vbuf[..., :n, :]
        return kbuf, vbuf, n

    def advance(self, layer_idx: int, add: int) -> None:
        """Count ``add`` positions written after :meth:`reserve` into the layer's filled part."""
        kbuf, vbuf = self._buffers[layer_idx]
        n = self.keys[layer_idx].shape[-2] + add
        self.keys[layer_idx], self.values[layer_idx] = kbuf[..., :n, :], vbuf[..., :n, :]

    def reserve_all(self, add: int) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        """:meth:`reserve` for every layer, which must all hold the same number of positions: ``(filled
        length, [(key buffer, value buffer)] per layer)``. A layer whose filled part is still the view
        :meth:`advance_all` made, with room left, costs a few identity checks."""
        n = self.keys[0].shape[-2]
        last = self.__dict__.get("_advanced")
        out = []
        for i, (keys, values) in enumerate(zip(self.keys, self.values)):
            if last is not None and i < len(last) and last[i][0] is keys and last[i][1] is values:
                bufs = self._buffers[i]
                if n + add <= bufs[0].shape[-2]:
                    out.append(bufs)
                    continue
            kbuf, vbuf, filled = self.reserve(i, add)
            if filled != n:
                raise ValueError(f"DynamicCache layer {i} holds {filled} positions and layer 0 {n}; a decode step "
                                 "writes the same position in every layer")
            out.append(self._buffers[i])
        return n, out

    def advance_all(self, add: int) -> None:
        """:meth:`advance` for every layer after :meth:`reserve_all`."""
        n = self.keys[0].shape[-2] + add
        views = []
        for i, (kbuf, vbuf) in enumerate(self._buffers):
            dim = kbuf.dim() - 2
            k, v = kbuf.narrow(dim, 0, n), vbuf.narrow(dim, 0, n)
            self.keys[i], self.values[i] = k, v
            views.append((k, v))
        self.__dict__["_advanced"] = views

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
            self._buffers.append(None)
        elif layer_idx < len(self.keys):
            while len(self._buffers) < len(self.keys):  # keys appended from outside (from_legacy_cache)
                self._buffers.append(None)
            bufs = self._buffers[layer_idx]
            kbuf, self.keys[layer_idx] = self._append(bufs[0] if bufs else None, self.keys[layer_idx], key)
            vbuf, self.values[layer_idx] = self._append(bufs[1] if bufs else None, self.values[layer_idx], value)
            self._buffers[layer_idx] = (kbuf, vbuf)
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


class StaticCache(Cache):
    """Preallocated to ``max_cache_len`` positions and written in place: no reallocation while decoding.

    Buffers are created on the first ``update`` of each layer, with that call's batch size,
    heads, head size, dtype and device. ``update`` writes the new positions at the layer's
    current length (or at ``cache_position``) and returns views of the filled part
    ``[b, kv_heads, filled, d]``, so attention and masks see exactly what a DynamicCache would
    give, without copying the whole cache every step.
    """

    is_compileable = True

    def __init__(self, config: object = None, max_cache_len: int | None = None, *, max_batch_size: int | None = None,
                 batch_size: int | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, **kwargs: object) -> None:
        if max_cache_len is None:
            max_cache_len = getattr(config, "max_position_embeddings", None)
        if max_cache_len is None or int(max_cache_len) <= 0:
            raise ValueError(f"StaticCache needs a positive max_cache_len, got {max_cache_len!r}")
        self.max_cache_len = int(max_cache_len)
        self.max_batch_size = max_batch_size if max_batch_size is not None else batch_size
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._lengths: list[int] = []

    def _allocate(self, key: torch.Tensor, value: torch.Tensor) -> None:
        b, h, _, d = key.shape
        if self.max_batch_size is not None and b != self.max_batch_size:
            raise ValueError(f"StaticCache was made for batch size {self.max_batch_size}, the model gave {b}")
        device = self.device or key.device
        self.keys.append(torch.zeros(b, h, self.max_cache_len, d, dtype=self.dtype or key.dtype, device=device))
        self.values.append(torch.zeros(b, value.shape[1], self.max_cache_len, value.shape[-1],
                                       dtype=self.dtype or value.dtype, device=device))
        self._lengths.append(0)

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor,
               cache_position: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self._allocate(key, value)
        elif layer_idx > len(self.keys):
            raise IndexError(f"cache update for layer {layer_idx} before layer {len(self.keys)}")
        start = self._lengths[layer_idx] if cache_position is None else int(cache_position.reshape(-1)[0])
        end = start + key.shape[-2]
        if end > self.max_cache_len:
            raise ValueError(
                f"StaticCache holds max_cache_len={self.max_cache_len} positions; writing positions {start}..{end - 1} "
                "overflows it. Create it with a larger max_cache_len."
            )
        k_buf, v_buf = self.keys[layer_idx], self.values[layer_idx]
        if key.shape[0] != k_buf.shape[0]:
            raise ValueError(f"StaticCache holds batch size {k_buf.shape[0]}, the update has {key.shape[0]}")
        k_buf[:, :, start:end].copy_(key)
        v_buf[:, :, start:end].copy_(value)
        self._lengths[layer_idx] = max(self._lengths[layer_idx], end) if cache_position is not None else end
        filled = self._lengths[layer_idx]
        return k_buf[:, :, :filled], v_buf[:, :, :filled]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._lengths[layer_idx] if layer_idx < len(self._lengths) else 0

    def get_max_cache_shape(self) -> int:
        return self.max_cache_len

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for i in range(len(self.keys)):
            idx = beam_idx.to(self.keys[i].device)
            n = self._lengths[i]
            self.keys[i][:, :, :n] = self.keys[i][:, :, :n].index_select(0, idx)
            self.values[i][:, :, :n] = self.values[i][:, :, :n].index_select(0, idx)

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on."""
        self._lengths = [min(n, length) for n in self._lengths]

    def reset(self) -> None:
        """Empty the cache, keeping the buffers for reuse."""
        self._lengths = [0 for _ in self._lengths]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = self._lengths[layer_idx]
        return self.keys[layer_idx][:, :, :n], self.values[layer_idx][:, :, :n]

    def __iter__(self):
        return (self[i] for i in range(len(self.keys)))

    def to_legacy_cache(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        return tuple(self[i] for i in range(len(self.keys)))


def as_cache(past_key_values: object, use_cache: bool) -> Cache | None:
    """Normalise the ``past_key_values`` argument: a Cache, a legacy tuple, or None."""
    if isinstance(past_key_values, Cache):
        return past_key_values
    if past_key_values is not None:
        return DynamicCache.from_legacy_cache(past_key_values)  # type: ignore[arg-type]
    return DynamicCache() if use_cache else None
