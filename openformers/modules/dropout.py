"""Dropout masks drawn 16 bits an element on the CPU.

``F.dropout`` on the CPU draws its keep mask with ``bernoulli_``: about 3.7 ms for one
[8, 64, 576] mask with 2 threads, and a LoRA step on SmolLM2 (q/k/v/o adapted) draws 120 of them,
~13% of the step. Here the mask comes from 64-bit draws of the default generator (one draw per
four elements), each 16-bit piece compared with ``round((1 - p) * 65536)``: ~0.5 ms for the same
mask. The keep probability is within 2**-17 of ``1 - p``; kept values are scaled by exactly
``1 / (1 - p)``, and the backward keeps the mask as bools, as ``F.dropout`` does.

The draws are reproducible under ``torch.manual_seed`` but are not those of ``F.dropout``, so
only LoRA's dropout uses these masks (``dropout_rows(..., fast_mask=True)`` in
``modules/packing.py``, packed or padded alike). The other dropouts keep ``F.dropout``'s stream,
which the training tests compare with transformers mask for mask. Other devices keep
``bernoulli_``.
"""
from __future__ import annotations

import math

import torch

_PIECES = 4  # 16-bit pieces in one 64-bit draw


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool mask of ``shape``, each element True with probability ``1 - p`` (``0 <= p < 1``)."""
    numel = math.prod(shape)
    if torch.device(device).type != "cpu":
        return torch.empty(shape, device=device).bernoulli_(1 - p).bool()
    threshold = round((1 - p) * 65536) - 32768  # a signed 16-bit piece v keeps when v < threshold
    draws = torch.empty(-(-numel // _PIECES), dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    return (draws.view(torch.int16)[:numel] < threshold).view(shape)


def apply_mask(x: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """``x * mask / (1 - p)``, differentiable in ``x``; the backward saves only the bool mask."""
    return torch.ops.aten.native_dropout_backward(x, mask, 1.0 / (1.0 - p))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the masks of :func:`keep_mask`."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout p={p}: the probability has to be between 0 and 1")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0
    return apply_mask(x, keep_mask(x.shape, p, x.device), p)
