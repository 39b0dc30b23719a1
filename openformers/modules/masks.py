"""Attention masks, built once per forward and shared by every layer."""
from __future__ import annotations

import torch


def _exporting() -> bool:
    # a graph traced for export (ONNX) must not depend on one batch's values: masks are always built
    return torch.compiler.is_exporting()


def padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype, q_len: int | None = None) -> torch.Tensor | None:
    """Bidirectional (encoder) mask: [b, k] 1/0 -> additive [b, 1, 1, k], or None when nothing is padded
    (always built while exporting)."""
    if attention_mask is None or (not _exporting() and bool(attention_mask.all())):
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device).masked_fill(~keep, torch.finfo(dtype).min)


def causal_mask(
    attention_mask: torch.Tensor | None,
    q_len: int,
    past_len: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    sliding_window: int | None = None,
    batch_size: int = 1,
) -> torch.Tensor | None:
    """Causal (decoder) mask as additive [b, 1, q, past + q], or None when plain causal suffices.

    ``attention_mask`` is the 1/0 mask over all ``past_len + q_len`` positions (cached and
    new). Returning None lets the backend use its fast causal path.
    """
    kv_len = past_len + q_len
    if attention_mask is not None and attention_mask.shape[-1] != kv_len:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions but the cache holds {past_len} and the "
            f"input adds {q_len}; pass a mask over all {kv_len} positions"
        )
    padded = attention_mask is not None and (_exporting() or not bool(attention_mask.all()))
    # exporting: the window is always applied (it keeps every position while kv_len <= sliding_window)
    windowed = sliding_window is not None and (_exporting() or kv_len > sliding_window)
    if not padded and not windowed:
        return None
    q_pos = torch.arange(past_len, kv_len, device=device)[:, None]  # [q, 1]
    k_pos = torch.arange(kv_len, device=device)[None, :]  # [1, k]
    keep = k_pos <= q_pos
    if windowed:
        keep = keep & (k_pos > q_pos - sliding_window)
    keep = keep[None, None]  # [1, 1, q, k]
    if padded:
        keep = keep & attention_mask[:, None, None, :].to(torch.bool)
    else:
        keep = keep.expand(batch_size, 1, q_len, kv_len)
    return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)
