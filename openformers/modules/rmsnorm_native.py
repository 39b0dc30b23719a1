"""RMSNorm while training on the CPU, as one native pass each way (``rmsnorm_native.c``).

PyTorch's ``weight * (x * rsqrt(x.pow(2).mean(-1) + eps))`` is five operators forward, keeping ``x`` and the
normalised ``x * rsqrt(...)`` for the backward, and about twice as many backward; for the narrow rows of a
decoder (576 values on SmolLM2) each is a pass over the whole ``[tokens, hidden]`` tensor. The kernel reads
a row once each way and keeps only ``x`` and one float a row; the weight's gradient is computed only when the
weight requires one (LoRA leaves it frozen). It applies to float32 CPU tensors with a contiguous last
dimension, while autograd records; elsewhere (and without the native library) :func:`rms_norm` returns None
and PyTorch's operators run.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import torch

from openformers.core.native import NativeLibrary


def _setup(lib: ctypes.CDLL) -> None:
    ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.of_rmsnorm.restype = None
    lib.of_rmsnorm.argtypes = [ptr, ptr, ptr, ptr, i64, i64, ctypes.c_float, c_int]
    lib.of_rmsnorm_backward.restype = None
    lib.of_rmsnorm_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, c_int]


_LIBRARY = NativeLibrary(Path(__file__).with_name("rmsnorm_native.c"), _setup)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        d = x.shape[-1]
        rows = x.numel() // d
        y = torch.empty_like(x)
        rstd = torch.empty(x.shape[:-1], dtype=torch.float32)
        _LIBRARY.get().of_rmsnorm(x.data_ptr(), weight.data_ptr(), y.data_ptr(), rstd.data_ptr(), rows, d, eps,
                                  torch.get_num_threads())
        ctx.save_for_backward(x, weight, rstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the same gradients from differentiable operators
            r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ctx.eps)
            xn, scaled = x * r, grad * weight
            gx = r * (scaled - xn * (scaled * xn).mean(-1, keepdim=True))
            gw = (grad * xn).reshape(-1, x.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
            return gx, gw, None
        grad = grad.contiguous()
        d = x.shape[-1]
        rows, threads = x.numel() // d, torch.get_num_threads()
        dx = torch.empty_like(x)
        parts = torch.zeros(threads, d, dtype=torch.float64) if ctx.needs_input_grad[1] else None
        _LIBRARY.get().of_rmsnorm_backward(grad.data_ptr(), x.data_ptr(), weight.data_ptr(), rstd.data_ptr(),
                                           dx.data_ptr(), None if parts is None else parts.data_ptr(), rows, d, threads)
        dw = None if parts is None else parts.sum(0).to(weight.dtype)
        return (dx if ctx.needs_input_grad[0] else None), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """``weight * (x * rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))``, or None where the native pass does not
    apply (see the module docstring)."""
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad) and x.dim() >= 1
            and weight.dim() == 1 and weight.shape[0] == x.shape[-1] and x.numel() > 0
            and x.dtype == weight.dtype == torch.float32 and x.device.type == weight.device.type == "cpu"
            and x.is_contiguous() and weight.is_contiguous()
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and _LIBRARY.get() is not None):
        return None
    return _RMSNorm.apply(x, weight, float(eps))
