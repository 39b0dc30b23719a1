"""Inference copies of linear weights in the CPU kernel library's own (blocked) layout.

A decode step multiplies a few rows by every weight of the model. PyTorch's CPU matmul for
bfloat16 (and for float32 with 2 to 32 rows) hands oneDNN a plain row-major weight, which
oneDNN re-arranges into its blocked layout on every call: the weight is read about twice and
decode runs at ~8 GB/s of weight. A copy made once with ``torch.ops.mkldnn._reorder_linear_weight``
skips that: SmolLM2-135M bfloat16 batch-1 decoding is ~1.5x faster, float32 batch 8 ~1.6x.

The copy is extra memory (the packed bytes of each weight used that way), so it is made only:

* at inference (the callers in ``fused.py`` run only without autograd), on the CPU, for bfloat16 products of up to ``PACK_MAX_ROWS`` rows and
  float32 decode steps of 2 to ``PACK_MAX_ROWS`` sequences (one position each); a float32
  batch of one is as fast split across threads without a copy, and longer inputs run the
  ordinary GEMM;
* while all packed copies of the process stay within a budget: a quarter of the machine's
  memory (of the container's limit, when lower), or ``OPENFORMERS_PACKED_WEIGHTS_MAX_MB``.
  ``OPENFORMERS_PACKED_WEIGHTS=0`` (or ``false``, ``no``, ``off``) in the environment turns packing off;
  both are read through ``core/settings.py`` (once per process) when this module is imported.

A copy is kept in a table of this module keyed weakly by the module that owns the weight (nothing is
stored on the module: copying and pickling it carry no copy) and is rebuilt when a source weight is replaced, re-pointed or updated in place
(identity, pointer and version counter; weights made under ``torch.inference_mode`` have no
version counter, so an in-place change to one of those made inside inference mode is not seen).
The copy dies with its module, and the budget gets its bytes back.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Callable

import torch

from openformers.core import settings

PACK_MAX_ROWS = 32
_BATCH_HINT = 8  # rows oneDNN lays the weight out for
_state = {
    "enabled": settings.get("OPENFORMERS_PACKED_WEIGHTS") and torch.backends.mkldnn.is_available(),
    "bytes": 0,
    "budget": None,
}
# owner module -> {slot: (weak references to the source tensors, their (pointer, version), packed weight)}
_COPIES: "weakref.WeakKeyDictionary[object, dict[str, tuple]]" = weakref.WeakKeyDictionary()


def _budget() -> int:
    if _state["budget"] is None:
        megabytes = settings.get("OPENFORMERS_PACKED_WEIGHTS_MAX_MB")
        if megabytes is not None:
            _state["budget"] = int(megabytes * 2**20)
        else:
            _state["budget"] = _memory_limit() // 4
    return _state["budget"]


def _memory_limit() -> int:
    """The machine's memory, or the container's limit (cgroup v2 or v1) when lower; 0 when unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total == 0 or 0 < int(text) < total):
            total = int(text)
    return total


def _release(nbytes: int) -> None:
    _state["bytes"] -= nbytes


def wants_packed(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight.T`` should run on a packed copy of ``weight`` (see module docstring)."""
    if not _state["enabled"] or x.dtype != weight.dtype or x.device.type != "cpu":
        return False
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if x.dtype == torch.bfloat16:
        return 1 <= rows <= PACK_MAX_ROWS
    if x.dtype == torch.float32:  # decode steps of a batch: one position per row
        return 2 <= rows <= PACK_MAX_ROWS and x.dim() >= 3 and x.shape[-2] == 1
    return False


def tensor_version(t: torch.Tensor) -> int:
    """``t._version`` (bumped by in-place updates); -1 for inference tensors, which have none."""
    try:
        return t._version
    except RuntimeError:  # inference tensors carry no version counter; they cannot be updated in place either
        return -1


def _stamp(t: torch.Tensor) -> tuple[int, int]:
    return t.data_ptr(), tensor_version(t)


def _current(entry: tuple, sources: tuple[torch.Tensor, ...]) -> bool:
    refs, stamps = entry[0], entry[1]
    if len(refs) != len(sources):
        return False
    for ref, stamp, t in zip(refs, stamps, sources):
        if ref() is not t or stamp != _stamp(t):
            return False
    return True


def _build(owner: object, slot: str, weight: torch.Tensor | Callable[[], torch.Tensor],
           sources: tuple[torch.Tensor, ...]) -> tuple | None:
    copies = _COPIES.setdefault(owner, {})
    copies.pop(slot, None)  # an outdated copy goes before its replacement is made
    nbytes = sum(t.numel() * t.element_size() for t in sources)
    if _state["bytes"] + nbytes > _budget():
        return None
    if callable(weight):
        weight = weight()
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _BATCH_HINT)
    except (RuntimeError, AttributeError):  # a build without oneDNN's linear ops
        _state["enabled"] = False
        return None
    _state["bytes"] += nbytes
    weakref.finalize(packed, _release, nbytes)
    copies[slot] = entry = (tuple(weakref.ref(t) for t in sources), tuple(_stamp(t) for t in sources), packed)
    return entry


_LINEAR = torch.ops.mkldnn._linear_pointwise.default if torch.backends.mkldnn.is_available() else None


def packed_weight(owner: object, slot: str, weight: torch.Tensor | Callable[[], torch.Tensor],
                  sources: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
    """The packed copy of ``weight`` ([out, in], or a function making it from ``sources``, called only when a
    copy is made) kept for ``owner`` under ``slot`` and made from ``sources`` (the parameters the weight is
    made of), made or remade when outdated. None when
    there is no copy and the budget or the kernel library does not allow one. Called at inference
    only, once per layer per decode step: the bookkeeping is kept to a few dictionary lookups."""
    copies = _COPIES.get(owner)
    entry = None if copies is None else copies.get(slot)
    if entry is None or not _current(entry, sources):
        entry = _build(owner, slot, weight, sources)
        if entry is None:
            return None
    return entry[2]


def run_packed(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` on a copy from :func:`packed_weight` (any leading dims, as F.linear)."""
    return _LINEAR(x, packed, bias, "none", [], "")


def budgeted_copy(make: Callable[[], torch.Tensor], nbytes: int) -> torch.Tensor | None:
    """A copy the runtime keeps beside the packed ones (the merged LoRA weights of ``adapters.py``): ``make()``,
    its ``nbytes`` counted against the same budget until it dies; None (``make`` not called) when they do not
    fit."""
    if _state["bytes"] + nbytes > _budget():
        return None
    copy = make()
    _state["bytes"] += nbytes
    weakref.finalize(copy, _release, nbytes)
    return copy


def packed_bytes() -> int:
    """Bytes held by packed copies in this process."""
    return _state["bytes"]
