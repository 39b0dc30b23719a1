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
    if batch == 1:  # sdpa's own path: the same bits
        assert torch.equal(out, reference)
    else:  # several sequences: the query heads as rows of their kv head (a faster kernel)
        atol = 2e-2 if dtype == torch.bfloat16 else 1e-6
        torch.testing.assert_close(out.float(), reference.float(), rtol=0, atol=atol)
        expanded = torch.softmax((q.float() @ k.float().repeat_interleave(3, 1).transpose(-1, -2)) * 0.25, -1)
        torch.testing.assert_close(out.float(), (expanded @ v.float().repeat_interleave(3, 1)).transpose(1, 2),
                                   rtol=0, atol=atol)
