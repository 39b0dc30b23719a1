"""Module casts that move buffers between devices but keep their dtype."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn


def apply_keeping_buffer_dtypes(module: nn.Module, parent_apply: Callable[..., Any], fn: Callable[..., Any],
                                recurse: bool = True) -> None:
    """Run ``parent_apply(fn, recurse)`` (the ``nn.Module._apply`` behind ``.to()``, ``.half()``,
    ``.cuda()``...) on ``module``, then give each of its own buffers back the dtype it had: device
    moves apply, casts do not. For buffers whose exact dtype matters (rotary frequencies, packed
    quantized weights and their scales)."""
    kept = {name: buf for name, buf in module._buffers.items() if buf is not None}
    parent_apply(fn, recurse)
    for name, old in kept.items():
        new = module._buffers[name]
        if new is not None and new.dtype != old.dtype:
            module._buffers[name] = old.to(new.device)
