"""The encoder runner's native attention (runtime/attention_native.py) against ``F.scaled_dot_product_attention``
in float32 on the same q/k/v: shapes off the kernel's blocks, padded keys (a row with every key left out
included), the first position alone, bfloat16 inputs; and where it does not apply it says so."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from openformers.runtime import attention_native

pytestmark = pytest.mark.skipif(attention_native._LIBRARY.get() is None, reason="no native library here")


def reference(qkv: torch.Tensor, b: int, s: int, h: int, d: int, mask: torch.Tensor | None, q_len: int) -> torch.Tensor:
    q, k, v = qkv.float().view(b, s, 3, h, d).unbind(2)
    q, k, v = q[:, :q_len].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    additive = None if mask is None else torch.zeros(b, 1, 1, s).masked_fill(mask[:, None, None, :] == 0, -3.4e38)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=additive).transpose(1, 2).reshape(b, q_len, h * d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(2, 7, 3, 5), (3, 70, 2, 64), (2, 130, 4, 48), (4, 128, 12, 32)])
@pytest.mark.parametrize("padded", ["none", "random", "right"])
@pytest.mark.parametrize("first_only", [False, True])
def test_it_gives_sdpa_outputs(shape: tuple, dtype: torch.dtype, padded: str, first_only: bool) -> None:
    b, s, h, d = shape
    g = torch.Generator().manual_seed(0)
    qkv = (torch.randn(b * s, 3 * h * d, generator=g) * 2).to(dtype)
    mask = None
    if padded == "random":
        mask = (torch.rand(b, s, generator=g) > 0.3).long()
        mask[:, 0] = 1
        mask[0] = 0  # every key left out: attends to all alike, as SDPA with the additive mask
    elif padded == "right":  # the keys after the last real one are skipped
        mask = (torch.arange(s)[None] < torch.tensor([s, 1] + [max(1, s // (i + 2)) for i in range(b - 2)])[:, None])
        mask = mask.long()
    q_len = 1 if first_only else s
    bias = None if mask is None else attention_native.key_bias(mask)
    got = attention_native.encoder_attention(qkv, b, s, h, d, bias, 1 / math.sqrt(d), q_len)
    assert got is not None and got.dtype == dtype and got.shape == (b, q_len, h * d)
    want = reference(qkv, b, s, h, d, mask, q_len)
    if padded == "right":  # a second call (one thread's buffers reused from item to item) gives the same
        assert torch.equal(attention_native.encoder_attention(qkv, b, s, h, d, bias, 1 / math.sqrt(d), q_len), got)
    # float32 inside (sums in another order than SDPA's); in bfloat16 one rounding of the output
    atol, rtol = (1e-5, 1e-4) if dtype == torch.float32 else (1e-2, 1e-2)
    torch.testing.assert_close(got.float(), want, atol=atol, rtol=rtol)


def test_a_wide_row_stride_is_read_in_place() -> None:
    b, s, h, d = 2, 9, 2, 16
    wide = torch.randn(b * s, 3 * h * d + 7)
    qkv = wide[:, : 3 * h * d]
    got = attention_native.encoder_attention(qkv, b, s, h, d, None, 0.25, s)
    want = attention_native.encoder_attention(qkv.contiguous(), b, s, h, d, None, 0.25, s)
    assert torch.equal(got, want)


def test_where_it_does_not_apply_it_returns_none() -> None:
    qkv = torch.randn(2 * 4, 3 * 8)
    assert attention_native.encoder_attention(qkv.double(), 2, 4, 2, 4, None, 0.5, 4) is None
    assert attention_native.encoder_attention(qkv.half(), 2, 4, 2, 4, None, 0.5, 4) is None
    assert attention_native.encoder_attention(qkv, 2, 4, 2, 3, None, 0.5, 4) is None  # not 3 * heads * dim wide
    assert attention_native.encoder_attention(qkv, 2, 4, 2, 4, None, 0.5, 5) is None  # more queries than positions
    assert attention_native.encoder_attention(qkv, 2, 4, 2, 4, torch.zeros(2, 4).double(), 0.5, 4) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention_native.encoder_attention(qkv, 2, 4, 2, 4, None, 0.5, 4) is None
