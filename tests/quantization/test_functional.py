"""4-bit and 8-bit quantization primitives: code books, packing, error bounds, double quantization."""
from __future__ import annotations

import torch

from openformers.quantization.functional import (
    FP4_CODE,
    NF4_CODE,
    code_book,
    dequantize_4bit,
    dequantize_8bit,
    dynamic_code,
    quantize_4bit,
    quantize_8bit,
)


def _normal_float_code(offset: float = 0.9677083) -> torch.Tensor:
    # QLoRA's construction: 8 positive and 7 negative quantiles of N(0, 1) plus an exact zero
    normal = torch.distributions.Normal(0.0, 1.0)
    pos = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (values / values.abs().max()).float()


def test_nf4_code_book_is_the_qlora_one():
    assert len(NF4_CODE) == 16 and NF4_CODE[7] == 0.0 and NF4_CODE[0] == -1.0 and NF4_CODE[15] == 1.0
    torch.testing.assert_close(code_book("nf4"), _normal_float_code(), rtol=0, atol=2e-6)
    # the published values (QLoRA appendix E)
    assert abs(NF4_CODE[1] + 0.6961928009986877) < 1e-12 and abs(NF4_CODE[8] - 0.07958029955625534) < 1e-12


def test_fp4_code_book_is_e2m1_scaled_to_one():
    magnitudes = sorted({abs(v) for v in FP4_CODE})
    expected = sorted(v / 12 for v in (0, 0.0625, 2, 3, 4, 6, 8, 12))
    assert magnitudes == expected
    assert all(FP4_CODE[i] == -FP4_CODE[i + 8] for i in range(1, 8))  # bit 3 is the sign


def test_dynamic_code_is_sorted_signed_256():
    code = dynamic_code()
    assert code.numel() == 256 and torch.all(code[1:] >= code[:-1])
    assert code.max() == 1.0 and code.min() > -1.0 and (code == 0).any()


def test_codes_are_nearest_and_packed_high_nibble_first():
    torch.manual_seed(0)
    w = torch.randn(6, 64)
    for qt in ("nf4", "fp4"):
        packed, state = quantize_4bit(w, qt)
        codes = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1).long()
        absmax = w.reshape(-1, 64).abs().amax(1)
        book = code_book(qt)
        target = (w.reshape(-1, 64) / absmax[:, None]).reshape(-1)
        brute = (target[:, None] - book[None, :]).abs()
        chosen = brute.gather(1, codes[:, None]).squeeze(1)
        torch.testing.assert_close(chosen, brute.min(1).values, rtol=0, atol=1e-7)
        torch.testing.assert_close(state.absmax, absmax)
    # a hand-made block: values on the code book come back as their own codes
    block = code_book("nf4").repeat(4)  # 64 values, absmax 1
    packed, _ = quantize_4bit(block, "nf4")
    assert packed[0].item() == (0 << 4) | 1 and packed[7].item() == (14 << 4) | 15


def test_quantize_dequantize_error_bounds():
    torch.manual_seed(1)
    w = torch.randn(96, 160) * 0.05
    blocks = w.reshape(-1, 64).abs().amax(1)
    for qt in ("nf4", "fp4"):
        book = code_book(qt).sort().values
        half_gap = ((book[1:] - book[:-1]).max() / 2).item()
        packed, state = quantize_4bit(w, qt)
        err = (dequantize_4bit(packed, state) - w).abs().reshape(-1, 64)
        assert torch.all(err <= blocks[:, None] * half_gap + 1e-7), qt
        assert packed.dtype == torch.uint8 and packed.numel() == w.numel() // 2
    rel = {qt: ((dequantize_4bit(*quantize_4bit(w, qt)) - w).norm() / w.norm()).item() for qt in ("nf4", "fp4")}
    assert rel["nf4"] < 0.11 and rel["fp4"] < 0.14 and rel["nf4"] < rel["fp4"]  # NF4 suits normal weights better
    q, scb = quantize_8bit(w)
    assert q.dtype == torch.int8 and scb.shape == (96,)
    err8 = (dequantize_8bit(q, scb) - w).abs()
    # half a step, plus the float16 rounding the weight goes through first (as in bitsandbytes)
    assert torch.all(err8 <= scb[:, None] / 254 * (1 + 2**-10) + w.abs() * 2**-11 + 1e-7)


def test_double_quant_scales():
    torch.manual_seed(2)
    w = torch.randn(300, 256) * 0.02  # 1200 blocks: 5 nested blocks, the last partial
    packed, plain = quantize_4bit(w, "nf4")
    packed_dq, nested = quantize_4bit(w, "nf4", double_quant=True)
    assert torch.equal(packed, packed_dq)  # codes do not depend on how the scales are stored
    assert nested.absmax.dtype == torch.uint8 and nested.nested_absmax.shape == (5,)
    torch.testing.assert_close(nested.nested_offset, plain.absmax.mean())
    rel = (nested.block_scales() - plain.absmax).abs() / plain.absmax
    assert rel.max() < 0.02
    a = dequantize_4bit(packed, plain)
    b = dequantize_4bit(packed_dq, nested)
    assert ((a - b).norm() / a.norm()) < 0.01


def test_odd_sizes_and_dtypes():
    torch.manual_seed(3)
    w = torch.randn(7, 13)  # 91 values: a partial block and an odd nibble
    packed, state = quantize_4bit(w, "nf4", double_quant=True)
    assert packed.numel() == 46
    out = dequantize_4bit(packed, state)
    assert out.shape == (7, 13) and ((out - w).norm() / w.norm()) < 0.15
    assert dequantize_4bit(packed, state, torch.bfloat16).dtype == torch.bfloat16
    zeros = torch.zeros(2, 64)
    p, s = quantize_4bit(zeros, "fp4")
    assert torch.equal(dequantize_4bit(p, s), zeros)
    q, scb = quantize_8bit(torch.zeros(3, 5))
    assert torch.equal(dequantize_8bit(q, scb), torch.zeros(3, 5))
