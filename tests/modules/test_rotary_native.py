"""The native rotary pass used while training (modules/rotary_native.py): PyTorch's values bit for bit,
forward and backward, for the layouts the attention layers give; a second derivative; and where it
declines."""
from __future__ import annotations

import pytest
import torch

from openformers.core import native
from openformers.modules import rotary_native
from openformers.modules.rotary import apply_rotary, rotate_half

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler: the native rotary pass is not built")


def _torch_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


@pytest.mark.parametrize("transposed", [True, False])
@pytest.mark.parametrize("cos_batch", [1, 3])
def test_native_rotary_is_pytorch_bit_for_bit(transposed: bool, cos_batch: int) -> None:
    assert rotary_native._LIBRARY.get() is not None, rotary_native._LIBRARY.error
    g = torch.Generator().manual_seed(0)
    b, h, length, d = 3, 5, 7, 32
    x0 = torch.randn(b, length, h, d, generator=g).transpose(1, 2) if transposed else torch.randn(b, h, length, d, generator=g)
    cos, sin = (torch.randn(cos_batch, length, d, generator=g).unsqueeze(1) for _ in range(2))
    grad = torch.randn(b, h, length, d, generator=g)
    x, x_ref = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    calls = []
    real = rotary_native._Rotary.apply
    try:
        rotary_native._Rotary.apply = lambda *a: calls.append(1) or real(*a)
        y = rotary_native.rotate(x, cos, sin)
    finally:
        rotary_native._Rotary.apply = real
    assert calls and y is not None
    y_ref = _torch_rotary(x_ref, cos, sin)
    assert torch.equal(y, y_ref) and y.stride() == y_ref.stride()
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.equal(x.grad, x_ref.grad)


def test_attention_layers_take_it_while_training_and_match() -> None:
    g = torch.Generator().manual_seed(1)
    q0, k0 = torch.randn(2, 6, 4, 16, generator=g).transpose(1, 2), torch.randn(2, 6, 2, 16, generator=g).transpose(1, 2)
    cos, sin = torch.randn(2, 6, 16, generator=g), torch.randn(2, 6, 16, generator=g)
    q, k = q0.clone().requires_grad_(), k0.clone().requires_grad_()
    rq, rk = apply_rotary(q, k, cos, sin)
    assert rq.grad_fn is not None and "Rotary" in type(rq.grad_fn).__name__
    (rq.sum() + rk.square().sum()).backward()
    q_ref, k_ref = q0.clone().requires_grad_(), k0.clone().requires_grad_()
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    eq, ek = _torch_rotary(q_ref, c, s), _torch_rotary(k_ref, c, s)
    (eq.sum() + ek.square().sum()).backward()
    assert torch.equal(rq, eq) and torch.equal(rk, ek)
    assert torch.equal(q.grad, q_ref.grad) and torch.equal(k.grad, k_ref.grad)
    with torch.no_grad():  # inference keeps PyTorch's operators
        assert rotary_native.rotate(q0, cos.unsqueeze(1), sin.unsqueeze(1)) is None


def test_second_derivative() -> None:
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, 2, 5, 8, generator=g)
    cos, sin = (torch.randn(1, 5, 8, generator=g).unsqueeze(1) for _ in range(2))
    x, x_ref = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    (gx,) = torch.autograd.grad(rotary_native.rotate(x, cos, sin).square().sum(), x, create_graph=True)
    (gx_ref,) = torch.autograd.grad(_torch_rotary(x_ref, cos, sin).square().sum(), x_ref, create_graph=True)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)
    (hx,) = torch.autograd.grad(gx.sum(), x)
    (hx_ref,) = torch.autograd.grad(gx_ref.sum(), x_ref)
    torch.testing.assert_close(hx, hx_ref, rtol=1e-6, atol=1e-6)


def test_declines_what_it_does_not_compute() -> None:
    x = torch.randn(1, 2, 5, 8, requires_grad=True)
    cos, sin = torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
    assert rotary_native.rotate(x.detach(), cos, sin) is None  # nothing to differentiate
    assert rotary_native.rotate(x.double(), cos.double(), sin.double()) is None
    assert rotary_native.rotate(x, cos[..., :4], sin[..., :4]) is None  # partial rotary
    assert rotary_native.rotate(x, cos.requires_grad_(), sin) is None
