"""Linear4bit and Linear8bitLt: forward equals a float linear on the dequantized weight."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from openformers.quantization import Linear4bit, Linear8bitLt


def _linear(in_f: int = 96, out_f: int = 48, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
    return layer


@pytest.mark.parametrize("make", [
    lambda lin: Linear4bit.from_linear(lin, quant_type="nf4"),
    lambda lin: Linear4bit.from_linear(lin, quant_type="fp4", compress_statistics=True),
    lambda lin: Linear8bitLt.from_linear(lin),
])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_is_linear_on_dequantized(make, bias):
    lin = _linear(bias=bias)
    q = make(lin)
    x = torch.randn(3, 5, 96)
    w = q.dequantize()
    assert w.shape == (48, 96) and w.dtype == torch.float32
    assert (q.in_features, q.out_features) == (96, 48) and q.weight.device.type == "cpu"
    torch.testing.assert_close(q(x), F.linear(x, w, lin.bias), rtol=1e-5, atol=1e-5)
    ref = lin(x)
    assert ((q(x) - ref).norm() / ref.norm()) < (0.02 if isinstance(q, Linear8bitLt) else 0.15)
    assert not any(p.dtype == torch.float32 and p.shape == (48, 96) for p in q.parameters())


def test_compute_dtype_and_storage():
    lin = _linear()
    q = Linear4bit.from_linear(lin, quant_type="nf4", compute_dtype=torch.bfloat16, quant_storage=torch.bfloat16)
    assert q.weight.dtype == torch.bfloat16 and q.dequantize().dtype == torch.bfloat16
    x = torch.randn(4, 96)
    y = q(x)
    assert y.dtype == torch.float32
    ref = F.linear(x, Linear4bit.from_linear(lin, quant_type="nf4").dequantize(), lin.bias)
    assert ((y - ref).norm() / ref.norm()) < 0.02


def test_gradients_flow_to_inputs():
    q = Linear4bit.from_linear(_linear(), quant_type="nf4")
    x = torch.randn(2, 96, requires_grad=True)
    q(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in q.parameters())


def test_empty_layer_says_so():
    q = Linear4bit(8, 8, pre_quantized=True)
    with pytest.raises(RuntimeError, match="no quantized weight"):
        q(torch.randn(1, 8))
    with pytest.raises(ValueError, match="quant_type"):
        Linear4bit(8, 8, quant_type="nf3")


def test_dtype_casts_keep_packed_data():
    lin = _linear()
    q4 = Linear4bit.from_linear(lin, quant_type="nf4", compress_statistics=True, quant_storage=torch.bfloat16)
    q8 = Linear8bitLt.from_linear(lin)
    before = {k: v.clone() for k, v in list(q4._buffers.items()) + [("SCB", q8.SCB.clone()), ("w8", q8.weight.clone())]}
    q4.to(torch.float16)
    q8.to(torch.bfloat16)
    assert torch.equal(q4.weight, before["weight"]) and torch.equal(q4.absmax, before["absmax"])
    assert torch.equal(q4.nested_offset, before["nested_offset"]) and torch.equal(q8.SCB, before["SCB"])
    assert q8.bias.dtype == torch.bfloat16 and q8.compute_dtype == torch.bfloat16
    x = torch.randn(2, 96)
    assert q8(x.bfloat16()).dtype == torch.bfloat16 and q4(x).dtype == torch.float32


@pytest.mark.parametrize("make", [
    lambda lin: Linear4bit.from_linear(lin, quant_type="nf4", compress_statistics=True),
    lambda lin: Linear8bitLt.from_linear(lin),
])
def test_backward_keeps_no_float_weight_and_matches_dequantized(make):
    """The input gradient equals the one through the dequantized weight, and nothing of the
    layer's float weight size is saved for backward (that copy would undo the memory saving)."""
    lin = _linear()
    q = make(lin)
    x = torch.randn(4, 7, 96, requires_grad=True)
    saved: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = q(x)
    assert (48, 96) not in saved and (96, 48) not in saved
    g = torch.randn_like(y)
    y.backward(g)
    x_ref = x.detach().clone().requires_grad_(True)
    F.linear(x_ref, q.dequantize(), lin.bias).backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
