"""The native SwiGLU pass used while training (modules/swiglu_native.py): values and gradients as close to
float64 as PyTorch's own float32 operators, the extremes of silu, second derivatives, where it declines, and a
Llama training step that gives the same loss and gradients with the native library off."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openformers.core import native
from openformers.modules import swiglu_native

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler: the native passes are not built")


def _err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.detach().double() - ref.detach()).abs().max())


@pytest.mark.parametrize("shape", [(8, 64, 1536), (3, 5)])
def test_swiglu_is_as_close_to_float64_as_pytorch(shape: tuple[int, ...]) -> None:
    assert swiglu_native._LIBRARY.get() is not None, swiglu_native._LIBRARY.error
    g = torch.Generator().manual_seed(0)
    gate0, up0, grad = torch.randn(*shape, generator=g) * 4, torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    gate, up = gate0.clone().requires_grad_(), up0.clone().requires_grad_()
    out = swiglu_native.swiglu(gate, up)
    assert out is not None and "SwiGLU" in type(out.grad_fn).__name__
    out.backward(grad)
    g64, u64 = gate0.double().requires_grad_(), up0.double().requires_grad_()
    ref = F.silu(g64) * u64
    ref.backward(grad.double())
    g32, u32 = gate0.clone().requires_grad_(), up0.clone().requires_grad_()
    torch32 = F.silu(g32) * u32
    torch32.backward(grad)
    for ours, theirs, exact in ((out, torch32, ref), (gate.grad, g32.grad, g64.grad), (up.grad, u32.grad, u64.grad)):
        assert _err(ours, exact) <= 4 * _err(theirs, exact) + 1e-6


def test_swiglu_at_the_extremes_of_silu() -> None:
    gate = torch.tensor([-1e4, -100.0, -88.5, -30.0, -1e-3, 0.0, 1e-3, 30.0, 88.5, 100.0, 1e4, float("nan"),
                         float("inf")], requires_grad=True)
    up = torch.ones_like(gate, requires_grad=True)
    out = swiglu_native.swiglu(gate, up)
    ref = F.silu(gate.detach().double())
    assert torch.isnan(out[-2]) and out[-1] == float("inf")
    torch.testing.assert_close(out[:-2].double(), ref[:-2], rtol=1e-6, atol=1e-30)


def test_second_derivatives_go_through_it() -> None:
    g = torch.Generator().manual_seed(2)
    gate, up = (torch.randn(4, 6, generator=g, dtype=torch.float32).requires_grad_() for _ in range(2))
    second = []
    for fn in (swiglu_native.swiglu, lambda a, b: F.silu(a) * b):
        firsts = torch.autograd.grad(fn(gate, up).square().sum(), (gate, up), create_graph=True)
        second.append(torch.autograd.grad(sum(f.square().sum() for f in firsts), (gate, up)))
    for a, b in zip(*second):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_it_declines_what_it_does_not_compute() -> None:
    a, b = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    assert swiglu_native.swiglu(a.detach(), b.detach()) is None  # nothing to differentiate: PyTorch's operators
    assert swiglu_native.swiglu(a.double(), b.double()) is None
    assert swiglu_native.swiglu(a.t(), b.t()) is None  # not contiguous
    with torch.no_grad():
        assert swiglu_native.swiglu(a, b) is None


def test_llama_training_step_is_the_same_without_the_native_library(monkeypatch: pytest.MonkeyPatch) -> None:
    from openformers.models.llama import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).train()
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    calls = []
    real = swiglu_native._SwiGLU.apply
    monkeypatch.setattr(swiglu_native._SwiGLU, "apply", lambda *a: calls.append(1) or real(*a))
    results = []
    for native_on in ("1", "0"):
        monkeypatch.setenv("OPENFORMERS_NATIVE", native_on)
        calls.clear()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)))
        model.zero_grad()
    (loss1, grads1, used1), (loss0, grads0, used0) = results
    assert used1 == 2 and used0 == 0  # one MLP a layer
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-6)
    assert grads1.keys() == grads0.keys()
    for name in grads1:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-4, atol=1e-6, msg=name)
