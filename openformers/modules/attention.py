"""Attention backends behind one signature.

``backend(q, k, v, mask, scale, dropout, *, is_causal=False, output_attentions=False)``
  q: [batch, heads, q_len, head_dim]; k, v: [batch, kv_heads, kv_len, head_dim]
  mask: additive float mask broadcastable to [batch, heads, q_len, kv_len], or None
  returns (out [batch, q_len, heads, head_dim], weights [batch, heads, q_len, kv_len] or None)

"eager" is the reference the others are tested against; "sdpa" is PyTorch's fused kernel.
Grouped-query attention (kv_heads < heads) is handled inside each backend.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

AttentionFn = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[b, kv_heads, L, d] -> [b, kv_heads * n_rep, L, d]."""
    if n_rep == 1:
        return x
    b, h, length, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, length, d).reshape(b, h * n_rep, length, d)


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, dropout: float = 0.0,
    *, is_causal: bool = False, output_attentions: bool = False, training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [b, h, q, k]
    if is_causal and mask is None:
        q_len, k_len = scores.shape[-2:]
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout and training:
        weights = F.dropout(weights, p=dropout, training=True)
    out = torch.matmul(weights, v)  # [b, h, q, d]
    return out.transpose(1, 2).contiguous(), (weights if output_attentions else None)


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, dropout: float = 0.0,
    *, is_causal: bool = False, output_attentions: bool = False, training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if output_attentions:  # the fused kernel does not expose the weights
        return eager_attention(q, k, v, mask, scale, dropout, is_causal=is_causal, output_attentions=True, training=training)
    gqa = q.shape[1] != k.shape[1]
    if gqa and q.shape[2] == 1 and (
        (mask is not None and mask.dim() == 4 and mask.shape[1] == 1)
        or (mask is None and not training and (q.shape[0] > 1 or q.dtype in (torch.bfloat16, torch.float16)))
    ):
        # a decode step: each kv head's query heads become its query rows, [b, kv_h, n_rep, d] (no
        # repeated k/v), the layout transformers uses for a masked step; a bf16 kernel rounds
        # differently per layout. Unmasked steps of several sequences take it too: sdpa's enable_gqa
        # path costs ~4x as much there in bf16 (SmolLM2, batch 8: 384 against ~110 us a layer) and
        # ~1.5x in float32 (152 against ~100 us). So do unmasked half-precision steps of one sequence
        # (SmolLM2 bf16, ~100 cached positions: 97 against 33 us a layer). One unmasked float32 sequence
        # keeps enable_gqa (faster there: 20 against 32 us), the path transformers takes, whose rounding
        # it then shares (the layouts differ by an ulp now and then)
        b, h, _, d = q.shape
        out = F.scaled_dot_product_attention(
            q.reshape(b, k.shape[1], h // k.shape[1], d), k, v, attn_mask=None if mask is None else mask.to(q.dtype),
            dropout_p=dropout if training else 0.0, scale=scale,
        )
        return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None
    if mask is not None:
        mask = mask.to(q.dtype)
        is_causal = False
    elif is_causal and q.shape[2] == 1:
        is_causal = False  # one query (a decode step) sees every cached key: no mask to build
    elif is_causal and q.shape[2] != k.shape[2]:
        # sdpa's is_causal aligns top-left; decoding with a cache needs bottom-right
        q_len, k_len = q.shape[2], k.shape[2]
        keep = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
        mask, is_causal = keep, False
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout if training else 0.0, is_causal=is_causal, scale=scale,
        enable_gqa=gqa,
    )
    return out.transpose(1, 2).contiguous(), None


ATTENTION_BACKENDS: dict[str, AttentionFn] = {"eager": eager_attention, "sdpa": sdpa_attention}


def get_attention_backend(name: str | None) -> AttentionFn:
    """The backend for ``config.attn_implementation`` (default "sdpa")."""
    name = name or "sdpa"
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attn_implementation={name!r} is unknown; choose one of {sorted(ATTENTION_BACKENDS)}")
    return ATTENTION_BACKENDS[name]
