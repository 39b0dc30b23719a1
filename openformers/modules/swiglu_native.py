"""SwiGLU (``silu(gate) * up``) while training on the CPU, as one native pass each way (``swiglu_native.c``).

PyTorch runs it as two operators forward (writing ``silu(gate)`` and keeping it for the backward) and three
backward (``dh * up``, ``silu_backward``, ``dh * silu(gate)``), each a pass over ``[tokens, intermediate]``
floats that do not stay in the cache. The kernel reads ``gate`` and ``up`` once forward and writes the
product; backward it reads ``dh``, ``gate`` and ``up`` once and writes both gradients, and nothing but the
two inputs is kept between. It applies to float32 CPU tensors of one shape, while autograd records; elsewhere
(and without the native library) :func:`swiglu` returns None and PyTorch's operators run.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import torch

from openformers.core.native import NativeLibrary


def _setup(lib: ctypes.CDLL) -> None:
    ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.of_swiglu.restype = None
    lib.of_swiglu.argtypes = [ptr, ptr, ptr, i64, c_int]
    lib.of_swiglu_backward.restype = None
    lib.of_swiglu_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, c_int]


_LIBRARY = NativeLibrary(Path(__file__).with_name("swiglu_native.c"), _setup)


def _check(kernel: str, n: int, **tensors: torch.Tensor) -> None:
    """Every buffer ``kernel`` reads or writes: contiguous float32 CPU memory of ``n`` values."""
    for name, t in tensors.items():
        if t.dtype != torch.float32 or not t.is_contiguous() or t.numel() != n or t.device.type != "cpu":
            raise ValueError(f"{kernel}: {name} is {tuple(t.shape)} {t.dtype} on {t.device} (contiguous: "
                             f"{t.is_contiguous()}); contiguous float32 CPU values, {n} of them, wanted")


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = torch.empty_like(gate, memory_format=torch.contiguous_format)
        _check("of_swiglu", gate.numel(), gate=gate, up=up, out=out)
        _LIBRARY.get().of_swiglu(gate.data_ptr(), up.data_ptr(), out.data_ptr(), gate.numel(), torch.get_num_threads())
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        gate, up = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the same gradients from differentiable operators
            s = torch.sigmoid(gate)
            return grad * up * (s * (1 + gate * (1 - s))), grad * (gate * s)
        grad = grad.contiguous()
        d_gate, d_up = torch.empty_like(gate), torch.empty_like(up)
        _check("of_swiglu_backward", gate.numel(), grad=grad, gate=gate, up=up, d_gate=d_gate, d_up=d_up)
        _LIBRARY.get().of_swiglu_backward(grad.data_ptr(), gate.data_ptr(), up.data_ptr(), d_gate.data_ptr(),
                                          d_up.data_ptr(), gate.numel(), torch.get_num_threads())
        return d_gate, d_up


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor | None:
    """``F.silu(gate) * up``, or None where the native pass does not apply (see the module docstring)."""
    if not (torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad) and gate.shape == up.shape
            and gate.dtype == up.dtype == torch.float32 and gate.device.type == up.device.type == "cpu"
            and gate.is_contiguous() and up.is_contiguous() and gate.numel() > 0 and _LIBRARY.runs_here()):
        return None
    return _SwiGLU.apply(gate, up)
