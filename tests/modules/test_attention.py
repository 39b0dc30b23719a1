"""sdpa_attention's decode-step layouts (modules/attention.py) against sdpa's own grouped-query path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openformers.modules.attention import sdpa_attention


def _step(batch: int, dtype: torch.dtype, length: int = 37):
    g = torch.Generator().manual_seed(batch)
    q = torch.randn(batch, 6, 1, 16, generator=g).to(dtype)  # 6 query heads over 2 kv heads
    k = torch.randn(batch, 2, length, 16, generator=g).to(dtype)
    v = torch.randn(batch, 2, length, 16, generator=g).to(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 4])
def test_unmasked_decode_step_equals_grouped_query_sdpa(dtype, batch):
    q, k, v = _step(batch, dtype)
    out, _ = sdpa_attention(q, k, v, None, 0.25, is_causal=True)
    reference = F.scaled_dot_product_attention(q, k, v, scale=0.25, enable_gqa=True).transpose(1, 2)
    assert out.shape == (batch, 1, 6, 16) and out.dtype == dtype
    if batch == 1 and dtype == torch.float32:  # sdpa's own path: the same bits
        assert torch.equal(out, reference)
    else:  # several sequences, or half precision: the query heads as rows of their kv head (a faster kernel)
        atol = 2e-2 if dtype == torch.bfloat16 else 1e-6
        torch.testing.assert_close(out.float(), reference.float(), rtol=0, atol=atol)
        expanded = torch.softmax((q.float() @ k.float().repeat_interleave(3, 1).transpose(-1, -2)) * 0.25, -1)
        torch.testing.assert_close(out.float(), (expanded @ v.float().repeat_interleave(3, 1)).transpose(1, 2),
                                   rtol=0, atol=atol)


@pytest.mark.parametrize("dtype, grouped_rows", [(torch.float32, False), (torch.bfloat16, True)])
def test_one_sequence_layout_by_dtype(monkeypatch, dtype, grouped_rows):
    # one unmasked sequence: float32 keeps sdpa's grouped-query path (faster there, transformers' rounding),
    # half precision runs the query heads as rows of their kv head (~3x faster in bf16)
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((tuple(q.shape), kw.get("enable_gqa", False)))
        return real(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = _step(1, dtype)
    sdpa_attention(q, k, v, None, 0.25, is_causal=True)
    assert seen == ([((1, 2, 3, 16), False)] if grouped_rows else [((1, 6, 1, 16), True)])
