"""Rotary embedding of q and k while training on the CPU, as one native pass each way (``rotary_native.c``).

PyTorch's ``x * cos + rotate_half(x) * sin`` is five operators over the transposed ``[b, heads, seq, d]``
views the projections give (a negation and a concatenation for ``rotate_half``, two products, a sum), and
about as many again in the backward. The kernel
reads each row once and writes the rotated row, in the input's own layout; compiled without contracted
multiply-adds, its values are PyTorch's bit for bit, forward and backward. It applies to float32 on the CPU
with the whole head dimension rotated, while autograd records; elsewhere (and without the native library)
:func:`rotate` returns None and PyTorch's operators run. A LoRA step on SmolLM2 is 2.3% faster with it
(``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import torch

from openformers.core.native import NativeLibrary


def _setup(lib: ctypes.CDLL) -> None:
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.of_rotary.restype = None
    lib.of_rotary.argtypes = [ptr, ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ctypes.c_int, ctypes.c_int]


_LIBRARY = NativeLibrary(Path(__file__).with_name("rotary_native.c"), _setup, flags=("-ffp-contract=off",))


def _strides(t: torch.Tensor, dims: tuple[int, ...]) -> ctypes.Array:
    return (ctypes.c_int64 * len(dims))(*(t.stride(i) if t.shape[i] > 1 else 0 for i in dims))


def _check(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> str | None:
    """What ``of_rotary`` could not read safely in these tensors, or None."""
    for name, t in (("x", x), ("cos", cos), ("sin", sin)):
        if t.dim() != 4 or t.dtype != torch.float32 or t.device.type != "cpu" or t.stride(-1) != 1:
            return f"{name} is {tuple(t.shape)} {t.dtype} on {t.device} with strides {t.stride()}; 4-D float32 " \
                   "CPU with a last stride of 1 wanted"
    b, _, length, d = x.shape
    if d % 2 or cos.shape != sin.shape or cos.stride() != sin.stride() or cos.shape[1] != 1 \
            or cos.shape[0] not in (1, b) or cos.shape[2:] != x.shape[2:]:
        return f"x {tuple(x.shape)}, cos {tuple(cos.shape)} and sin {tuple(sin.shape)} (strides {cos.stride()}, " \
               f"{sin.stride()}); an even head size and cos, sin [{b} or 1, 1, {length}, {d}] of equal strides wanted"
    return None


def _run(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    err = _check(x, cos, sin)
    if err is not None:
        raise ValueError(f"of_rotary: {err}")
    y = torch.empty_like(x)  # the input's layout (the projections' [b, seq, heads, d] memory)
    if y.stride(-1) != 1:
        y = torch.empty(x.shape, dtype=x.dtype)
    b, heads, length, d = x.shape
    _LIBRARY.get().of_rotary(x.data_ptr(), _strides(x, (0, 1, 2)), b, heads, length, d, cos.data_ptr(), sin.data_ptr(),
                             _strides(cos, (0, 2)), y.data_ptr(), _strides(y, (0, 1, 2)), int(backward),
                             torch.get_num_threads())
    return y


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(cos, sin)
        return _run(x, cos, sin, backward=False)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the transposed rotation from differentiable operators
            half = grad.shape[-1] // 2
            g = grad * sin
            return grad * cos + torch.cat((g[..., half:], -g[..., :half]), dim=-1), None, None
        if grad.stride(-1) != 1:
            grad = grad.contiguous()
        return _run(grad, cos, sin, backward=True), None, None


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor | None:
    """``x * cos + rotate_half(x) * sin`` for x ``[b, heads, seq, d]`` and cos, sin ``[b or 1, 1, seq, d]``, or None
    where the native pass does not apply (see the module docstring)."""
    if not (torch.is_grad_enabled() and x.requires_grad and not cos.requires_grad and not sin.requires_grad
            and x.dim() == 4 and cos.dim() == 4 and cos.shape == sin.shape and cos.shape[1] == 1
            and cos.shape[0] in (1, x.shape[0]) and cos.shape[2] == x.shape[2] and cos.shape[3] == x.shape[3]
            and x.shape[3] % 2 == 0 and x.dtype == cos.dtype == sin.dtype == torch.float32
            and x.device.type == cos.device.type == sin.device.type == "cpu"
            and x.stride(-1) == 1 and cos.stride(-1) == 1 and sin.stride(-1) == 1 and cos.stride() == sin.stride()
            and x.numel() > 0 and _LIBRARY.runs_here()):
        return None
    return _Rotary.apply(x, cos, sin)
