"""A key/value cache of fixed slots shared by the requests of a continuous batch.

Every layer keeps one buffer ``[slots, kv_heads, capacity, head_dim]``. A request owns one slot
while it runs; its positions live at ``[0, length)`` of that slot, so slots of different lengths
sit side by side. Before each forward the engine calls :meth:`SlotCache.bind` with the slots of the
batch and their lengths; the model then sees an ordinary cache whose length is the longest bound
slot (``past``), and :meth:`update` writes each row's new positions at that row's own length and
returns the slots' first ``past + new`` positions. The attention mask the engine passes marks, per
row, the positions ``[0, length]`` of its own sequence (the rest is another request's leftovers or
empty), and the position ids are each row's own length: the row attends exactly as it would alone.

Prefill of several requests in one forward binds each row with its own count of new tokens: the rows
are left-padded to the longest chunk, and :meth:`update` writes only each row's last ``count`` new
positions, at that row's length (the padding never reaches the cache); the engine's 4D mask and
position ids place each row's queries at its own positions.

The capacity grows (doubling, up to ``max_len``) as the longest sequence needs more, so memory
follows what is in use rather than the model's full context.

A decode step (one new position a row) may be run by the runtime's native step instead of the layers'
``update`` calls: :meth:`native_rows` hands it the buffers, the bound slots and their lengths, and it writes
each row's new key and value at that row's length itself (``runtime/native_step.py``). :attr:`written`
says whether the last bound forward went through :meth:`update`.
"""
from __future__ import annotations

import torch

from openformers.modules.cache import Cache


class SlotCache(Cache):
    """Fixed slots of key/value positions, reused by request after request (see the module docstring)."""

    def __init__(self, num_slots: int, max_len: int, initial_capacity: int = 256) -> None:
        if num_slots <= 0 or max_len <= 0:
            raise ValueError(f"SlotCache needs num_slots > 0 and max_len > 0, got {num_slots} and {max_len}")
        self.num_slots = num_slots
        self.max_len = max_len
        self.capacity = min(initial_capacity, max_len)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._slots: torch.Tensor | None = None
        self._range: tuple[int, int] | None = None  # (first, end) when the bound slots are consecutive
        self._lengths: torch.Tensor | None = None
        self._rows: list[tuple[int, int, int]] = []  # (slot, length, count) of each row, for updates of q > 1
        self._flat: tuple[int, torch.Tensor] | None = None  # (kv heads, flat row index of each new position)
        self._past = 0
        self._new = 0
        self.written = False  # update() ran since the last bind()
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # native_rows' buffers (same objects while unchanged)

    def bind(self, slots: list[int], lengths: list[int], new: int = 1, counts: list[int] | None = None) -> None:
        """Set the slots (in batch order), their filled lengths and the number of positions the next forward adds
        (``new``, the input's width); ``counts`` (default: ``new`` each) is how many of a row's last ``new``
        positions are real tokens, the rest left padding that is not written."""
        if counts is None:
            counts = [new] * len(slots)
        if len(counts) != len(slots) or any(not 0 < c <= new for c in counts):
            raise ValueError(f"SlotCache.bind: counts {counts} must give each of the {len(slots)} rows 1 to {new} tokens")
        new_len = max(lengths) + new
        if new_len > self.capacity:
            self.reserve(new_len)
        self._slots = torch.tensor(slots, dtype=torch.long)
        first = slots[0]
        self._range = (first, first + len(slots)) if slots == list(range(first, first + len(slots))) else None
        self._lengths = torch.tensor(lengths, dtype=torch.long)
        self._rows = list(zip(slots, lengths, counts))
        self._flat: tuple[int, torch.Tensor] | None = None
        self._past = max(lengths)
        self._new = new
        self.written = False

    def native_rows(self) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor] | None:
        """For a decode step that writes and reads the buffers itself (``runtime/decode.py``): every layer's
        (key, value) buffers ``[slots, kv_heads, capacity, head_dim]``, the bound slots in batch order and their
        lengths (int64); None unless the batch is bound for one new position a row and the buffers exist."""
        if self._slots is None or self._new != 1 or not self.keys:
            return None
        if self._pairs is None or len(self._pairs) != len(self.keys):
            self._pairs = list(zip(self.keys, self.values))
        return self._pairs, self._slots, self._lengths

    def reserve(self, length: int) -> None:
        """Make room for ``length`` positions in every slot (the capacity doubles until it fits)."""
        if length > self.max_len:
            raise ValueError(f"SlotCache holds at most {self.max_len} positions per slot; {length} were asked for")
        capacity = self.capacity
        while capacity < length:
            capacity = min(capacity * 2, self.max_len)
        if capacity == self.capacity:
            return
        for store in (self.keys, self.values):
            for i, buf in enumerate(store):
                grown = buf.new_zeros(buf.shape[0], buf.shape[1], capacity, buf.shape[3])
                grown[:, :, : self.capacity] = buf
                store[i] = grown
        self.capacity = capacity
        self._pairs = None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._past

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # key, value: [b, kv_heads, q, head_dim], one row per bound slot
        if self._slots is None:
            raise ValueError("SlotCache.update() before bind(): the engine binds the batch's slots before each forward")
        if layer_idx == len(self.keys):
            shape = (self.num_slots, key.shape[1], self.capacity, key.shape[3])
            self.keys.append(torch.zeros(shape, dtype=key.dtype, device=key.device))
            self.values.append(torch.zeros(shape[:3] + (value.shape[3],), dtype=value.dtype, device=value.device))
        k_buf, v_buf = self.keys[layer_idx], self.values[layer_idx]
        self.written = True
        q = key.shape[2]
        if q == 1:  # one position a row: one index_copy_ into the flattened buffers (rows of [slot, head, position])
            heads, d = key.shape[1], key.shape[3]
            if self._flat is None or self._flat[0] != heads:
                index = (self._slots[:, None] * heads + torch.arange(heads)) * self.capacity + self._lengths[:, None]
                self._flat = (heads, index.reshape(-1).to(key.device))
            k_buf.view(-1, d).index_copy_(0, self._flat[1], key.reshape(-1, d))
            v_buf.view(-1, value.shape[3]).index_copy_(0, self._flat[1], value.reshape(-1, value.shape[3]))
        else:
            for row, (slot, start, count) in enumerate(self._rows):
                k_buf[slot, :, start : start + count] = key[row, :, q - count:]
                v_buf[slot, :, start : start + count] = value[row, :, q - count:]
        end = self._past + q
        if self._range is not None:
            first, stop = self._range
            return k_buf[first:stop, :, :end], v_buf[first:stop, :, :end]
        return k_buf[self._slots, :, :end], v_buf[self._slots, :, :end]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise ValueError("SlotCache serves one sequence per slot; beam search is not supported by the serving engine")
