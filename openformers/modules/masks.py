"""Attention masks, built once per forward and shared by every layer."""
from __future__ import annotations

import torch


def padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype, q_len: int | None = None) -> torch.Tensor | None:
    """Bidirectional (encoder) mask: [b, k] 1/0 -> additive [b, 1, 1, k], or None when nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
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
    padded = attention_mask is not None and not bool(attention_mask.all())
    windowed = sliding_window is not None and kv_len > sliding_window
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


def packed_sequence_ids(position_ids: torch.Tensor | None) -> torch.Tensor | None:
    """For rows holding several documents one after the other (``position_ids`` restarting at each
    document, as ``DataCollatorWithFlattening`` makes them): ``[b, s]`` the index of each token's
    document within its row; None when no row restarts (one document a row)."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[1] < 2:
        return None
    step = torch.diff(position_ids, dim=-1)  # [b, s - 1]: 1 inside a document
    if bool((step == 1).all()):
        return None
    starts = torch.cat([torch.zeros_like(position_ids[:, :1]), (step != 1).to(position_ids.dtype)], dim=-1)
    return starts.cumsum(-1)


def positions_from_cu_seqlens(cu_seq_lens: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """``[1, total]`` position ids restarting at each boundary of the cumulative lengths ``cu_seq_lens``."""
    bounds = [int(v) for v in cu_seq_lens.reshape(-1).tolist()]
    if bounds[0] != 0 or any(b < a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seq_lens must start at 0 and not decrease, got {bounds[:8]}...")
    return torch.cat([torch.arange(b - a, device=device) for a, b in zip(bounds, bounds[1:])])[None]


def packed_causal_mask(
    document_ids: torch.Tensor, dtype: torch.dtype, *, sliding_window: int | None = None
) -> torch.Tensor:
    """Additive ``[b, 1, s, s]`` causal mask that keeps each token within its own document
    (``document_ids`` from :func:`packed_sequence_ids`)."""
    s = document_ids.shape[1]
    pos = torch.arange(s, device=document_ids.device)
    keep = pos[None, :] <= pos[:, None]  # [q, k]
    if sliding_window is not None:
        keep = keep & (pos[None, :] > pos[:, None] - sliding_window)
    keep = keep[None] & (document_ids[:, :, None] == document_ids[:, None, :])  # [b, q, k]
    keep = keep[:, None]
    return torch.zeros(keep.shape, dtype=dtype, device=document_ids.device).masked_fill(~keep, torch.finfo(dtype).min)
