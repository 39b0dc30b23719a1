"""The encoder runner's attention on the CPU as one native pass (``attention_native.c``).

``F.scaled_dot_product_attention`` on the CPU runs its flash kernel for an encoder's short sequences and
small heads (MiniLM: 128 positions, 12 heads of 32 values); in bfloat16 it is slower than in float32, and
it takes q, k and v as separate strided views and gives back a [batch, heads, seq, dim] view. The native
pass reads the stacked q/k/v product's output as it is, computes in float32 (scores, softmax and the
weighted sum of v, rounded once at the end), and writes ``[batch, q_len, heads * dim]``, the layout the
attention's output product reads, in one parallel region of PyTorch's OpenMP threads.

:func:`encoder_attention` returns None where it does not apply (not a float32 / bfloat16 CPU tensor of the
expected shape, autocast, ``torch.compile``, or no native library: ``OPENFORMERS_NATIVE=0``, no compiler);
the runner then calls ``F.scaled_dot_product_attention``.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from openformers.core.native import NativeLibrary


def _setup(lib: ctypes.CDLL) -> None:
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.of_encoder_attention.restype = ctypes.c_int
    lib.of_encoder_attention.argtypes = [ptr, i64, i64, i64, i64, i64, i64, ptr, ctypes.c_float, ptr, ctypes.c_int,
                                         ctypes.c_int]


_LIBRARY = NativeLibrary(Path(__file__).with_name("attention_native.c"), _setup, fallback="scaled_dot_product_attention")


def key_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[batch, seq]`` 1/0 -> the additive float32 key mask the native pass reads (0 kept, float32's lowest
    value left out: a row with every key left out attends to all alike, as the additive mask does in SDPA)."""
    return torch.zeros(attention_mask.shape, dtype=torch.float32, device=attention_mask.device).masked_fill(
        attention_mask == 0, torch.finfo(torch.float32).min)


def available(x: torch.Tensor) -> bool:
    """Whether the native pass may run on activations like ``x`` in this call."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and _LIBRARY.runs_here()


def encoder_attention(qkv: torch.Tensor, batch: int, seq: int, heads: int, dim: int, bias: torch.Tensor | None,
                      scale: float, q_len: int) -> torch.Tensor | None:
    """Attention of the first ``q_len`` positions of each sequence over all ``seq`` of them, from ``qkv``
    (``[batch * seq, 3 * heads * dim]``, rows of [q | k | v]), with the additive key mask ``bias``
    (:func:`key_bias`, or None); ``[batch, q_len, heads * dim]`` in ``qkv``'s dtype, or None where the
    native pass does not apply (see the module docstring)."""
    hidden = heads * dim
    if (qkv.dim() != 2 or qkv.shape != (batch * seq, 3 * hidden) or qkv.stride(1) != 1 or not 0 < q_len <= seq
            or not available(qkv)):
        return None
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (batch, seq) or not bias.is_contiguous()
                             or bias.device.type != "cpu"):
        return None
    out = torch.empty(batch, q_len, hidden, dtype=qkv.dtype, device=qkv.device)
    failed = _LIBRARY.get().of_encoder_attention(
        qkv.data_ptr(), qkv.stride(0), batch, seq, q_len, heads, dim, None if bias is None else bias.data_ptr(),
        float(scale), out.data_ptr(), int(qkv.dtype == torch.bfloat16), torch.get_num_threads())
    if failed:
        raise RuntimeError(f"of_encoder_attention failed (code {failed}: 1 a bad shape, 2 out of memory) for "
                           f"batch {batch}, seq {seq}, q_len {q_len}, heads {heads}, dim {dim}")
    return out
