"""Module dtype casts on 4-bit layers keep the int4 kernel's packed weight and scales as they are."""
from __future__ import annotations

import torch
from torch import nn

from openformers.quantization import QuantizedLinear


def _layer(compute_dtype: torch.dtype) -> QuantizedLinear:
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(64, 32, bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(32, 64, generator=gen))
        linear.bias.copy_(torch.randn(32, generator=gen))
    return QuantizedLinear.from_linear(linear, group_size=32, compute_dtype=compute_dtype)


def test_float_cast_keeps_packed_weight_and_scales():
    model = nn.Sequential(_layer(torch.bfloat16))
    layer = model[0]
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = layer(x)  # the first call may move qweight into the native kernel's layout
    qweight, scales = layer.qweight.clone(), layer.scales_and_zeros.clone()
    model.to(torch.float32)
    assert layer.scales_and_zeros.dtype == torch.bfloat16 and layer.compute_dtype == torch.bfloat16
    assert torch.equal(layer.scales_and_zeros, scales) and torch.equal(layer.qweight, qweight)
    assert layer.qweight.dtype == torch.uint8 and layer.bias.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(layer(x), before)  # same kernel call, same dtype: bit-identical
    model.half()
    assert layer.scales_and_zeros.dtype == torch.bfloat16 and layer.bias.dtype == torch.float16
    with torch.no_grad():
        out = layer(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), before, rtol=1e-2, atol=0.05)  # fp16 input, output and bias


def test_float32_compute_dtype_survives_a_bfloat16_cast():
    layer = _layer(torch.float32)
    layer.to(torch.bfloat16)
    assert layer.scales_and_zeros.dtype == torch.float32 and layer.bias.dtype == torch.bfloat16
    layer.to("cpu")  # a device move (same device) changes nothing
    assert layer.scales_and_zeros.dtype == torch.float32
