"""LoRA's dropout on the CPU: masks from a counter hash, and the dropout fused with LoRA's first product.

``F.dropout`` on the CPU draws its keep mask with ``bernoulli_``: about 3.7 ms for one [8, 64, 576]
mask with 2 threads, and a LoRA step on SmolLM2 (q/k/v/o adapted) draws 120 of them. Here a mask
is a function of one 64-bit seed drawn from the default generator (so ``torch.manual_seed`` makes it
reproducible) and of each element's row and column: SplitMix64's output function on a counter gives
four 16-bit pieces per hash, one per element, each compared with ``round((1 - p) * 65536)`` (the
exact rule is in ``dropout_native.c``). The keep probability is within 2**-17 of ``1 - p``; kept
values are scaled by exactly ``1 / (1 - p)``.

Because the mask can be recomputed from the seed, LoRA's ``lora_A(dropout(x))`` runs as one native
kernel (:func:`dropout_product`): it reads ``x`` once, writes the ``[rows, r]`` product, and its
backward recomputes the mask, so neither the mask nor the dropped copy of ``x`` is stored (peft keeps
the dropped copy, ``x``'s size, for every adapted layer). On SmolLM2 with q/k/v/o adapted the dropout
cost ~7% of a LoRA step (masks drawn, applied, and applied again in the backward); the kernel makes it
negligible. Where the native library is not there (no C compiler, ``OPENFORMERS_NATIVE=0``), the same
masks are computed with PyTorch's integer operators and applied with PyTorch's.

These masks are not ``F.dropout``'s stream, so only LoRA's dropout
uses them; the other dropouts keep ``F.dropout``, which the training tests compare with transformers
mask for mask. Other devices keep ``bernoulli_``.
"""
from __future__ import annotations

import ctypes
import math
from pathlib import Path
from typing import Any

import torch

from openformers.core.native import NativeLibrary

_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _setup(lib: ctypes.CDLL) -> None:
    i64, u64, ptr, c_int, c_float = ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.of_dropout_mask.restype = c_int
    lib.of_dropout_mask.argtypes = [i64, i64, ptr, u64, c_int, ptr, c_int]
    lib.of_dropout_product.restype = c_int
    lib.of_dropout_product.argtypes = [ptr, i64, i64, ptr, u64, c_int, c_float, ptr, i64, ptr, c_int]
    lib.of_dropout_product_backward.restype = c_int
    lib.of_dropout_product_backward.argtypes = [ptr, i64, i64, ptr, u64, c_int, c_float, ptr, i64, ptr, ptr, ptr, c_int]


_LIBRARY = NativeLibrary(Path(__file__).with_name("dropout_native.c"), _setup)


def _threshold(p: float) -> int:
    """A signed 16-bit piece ``v`` keeps its element when ``v < threshold``."""
    return round((1 - p) * 65536) - 32768


def _seed() -> int:
    """One draw of the default generator: a 64-bit seed, kept signed (an argument ``torch.profiler`` can record
    with the shapes); the kernels read its bits as unsigned."""
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), 2**63 - 1))


def _signed(v: int) -> int:
    return v - 2**64 if v >= 2**63 else v


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (PyTorch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mask_torch(seed: int, n: int, w: int, p: float, ids: torch.Tensor | None) -> torch.Tensor:
    """The mask of ``dropout_native.c``'s rule, with PyTorch's int64 operators (wrapping products)."""
    quads = -(-w // 4)
    rows = torch.arange(n, dtype=torch.int64) if ids is None else ids.to(torch.int64)
    counter = rows[:, None] * quads + torch.arange(quads, dtype=torch.int64) + 1
    z = counter * _signed(_GOLDEN) + _signed(seed)
    z = (z ^ _shift_right(z, 30)) * _signed(_MIX1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MIX2)
    z = z ^ _shift_right(z, 31)
    pieces = z.view(torch.int16).view(n, quads * 4)[:, :w]  # little-endian: piece j of a hash is element 4q + j
    return pieces < _threshold(p)


def _check(kernel: str, p: float | None, n: int, w: int, ids: torch.Tensor | None, **tensors: tuple) -> None:
    """``0 < p < 1`` (unless None), ``ids`` (when given) ``n`` contiguous int64 values, and each named tensor contiguous CPU
    memory of the (dtype, shape) given beside it: what ``kernel`` reads and writes."""
    if p is not None and not 0.0 < p < 1.0:
        raise ValueError(f"{kernel}: p={p}; 0 < p < 1 wanted")
    if n < 0 or w < 0:
        raise ValueError(f"{kernel}: {n} rows of {w} values")
    if ids is not None and (ids.dtype != torch.int64 or not ids.is_contiguous() or ids.numel() != n
                            or ids.device.type != "cpu"):
        raise ValueError(f"{kernel}: ids is {tuple(ids.shape)} {ids.dtype}; {n} contiguous int64 CPU values wanted "
                         "(one per row)")
    for name, (t, dtype, shape) in tensors.items():
        if t.dtype != dtype or tuple(t.shape) != shape or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError(f"{kernel}: {name} is {tuple(t.shape)} {t.dtype} (contiguous: {t.is_contiguous()}); "
                             f"contiguous {dtype} CPU {list(shape)} wanted")


def seeded_mask(seed: int, n: int, w: int, p: float, ids: torch.Tensor | None = None) -> torch.Tensor:
    """The bool keep mask ``[n, w]`` of ``seed`` (row ``i`` hashed as row ``ids[i]`` when ``ids`` is given)."""
    lib = _LIBRARY.get()
    if lib is None or n * w == 0:
        return _mask_torch(seed, n, w, p, ids)
    out = torch.empty(n, w, dtype=torch.bool)
    ids = None if ids is None else ids.to(torch.int64).contiguous()
    _check("of_dropout_mask", None, n, w, ids, out=(out, torch.bool, (n, w)))
    if lib.of_dropout_mask(n, w, None if ids is None else ids.data_ptr(), seed, _threshold(p), out.data_ptr(),
                           torch.get_num_threads()) != 0:
        raise MemoryError("the dropout mask kernel could not allocate its row scratch")
    return out


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float, device: torch.device,
              ids: torch.Tensor | None = None) -> torch.Tensor:
    """A bool mask of ``shape``, each element True with probability ``1 - p`` (``0 <= p < 1``). On the CPU, rows
    (the last dimension's vectors) are hashed as rows ``ids`` when given (``ids`` has one entry per row)."""
    if torch.device(device).type != "cpu":
        return torch.empty(shape, device=device).bernoulli_(1 - p).bool()
    w = shape[-1] if len(shape) else 1
    n = math.prod(shape) // w if w else 0
    return seeded_mask(_seed(), n, w, p, ids).view(shape)


def apply_mask(x: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """``x * mask / (1 - p)``, differentiable in ``x``; the backward saves only the bool mask."""
    return torch.ops.aten.native_dropout_backward(x, mask, 1.0 / (1.0 - p))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the masks of :func:`keep_mask`."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout p={p}: the probability has to be between 0 and 1")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0
    return apply_mask(x, keep_mask(x.shape, p, x.device), p)


class _DropoutProduct(torch.autograd.Function):
    """``dropout(x) @ a.T`` for x ``[n, w]`` and a ``[r, w]`` (float32, CPU), the mask regenerated from the seed."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, a: torch.Tensor, p: float, seed: int,  # type: ignore[override]
                ids: torch.Tensor | None) -> torch.Tensor:
        lib = _LIBRARY.get()
        if x.dim() != 2 or a.dim() != 2:
            raise ValueError(f"of_dropout_product: x {tuple(x.shape)} and a {tuple(a.shape)}; [n, w] and [r, w] wanted")
        out = torch.empty(x.shape[0], a.shape[0], dtype=torch.float32)
        n, w, r = x.shape[0], x.shape[1], a.shape[0]
        _check("of_dropout_product", p, n, w, ids, x=(x, torch.float32, (n, w)), a=(a, torch.float32, (r, w)),
               out=(out, torch.float32, (n, r)))
        if lib.of_dropout_product(x.data_ptr(), x.shape[0], x.shape[1], None if ids is None else ids.data_ptr(), seed,
                                  _threshold(p), 1.0 / (1.0 - p), a.data_ptr(), a.shape[0], out.data_ptr(),
                                  torch.get_num_threads()) != 0:
            raise MemoryError("the dropout product kernel could not allocate its row scratch")
        ctx.save_for_backward(x, a, ids)
        ctx.p, ctx.seed = p, seed
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, a, ids = ctx.saved_tensors
        p, seed = ctx.p, ctx.seed
        want_x, want_a = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():  # create_graph: the same gradients from differentiable operators
            kept = seeded_mask(seed, x.shape[0], x.shape[1], p, ids).to(x.dtype) / (1.0 - p)
            return (g @ a) * kept if want_x else None, g.t() @ (x * kept) if want_a else None, None, None, None
        g = g.contiguous()
        grad_x = torch.empty_like(x) if want_x else None
        grad_a = torch.empty_like(a) if want_a else None
        lib = _LIBRARY.get()
        n, w, r = x.shape[0], x.shape[1], a.shape[0]
        grads = {} if grad_x is None else {"grad_x": (grad_x, torch.float32, (n, w))}
        if grad_a is not None:
            grads["grad_a"] = (grad_a, torch.float32, (r, w))
        _check("of_dropout_product_backward", p, n, w, ids, x=(x, torch.float32, (n, w)),
               a=(a, torch.float32, (r, w)), g=(g, torch.float32, (n, r)), **grads)
        if lib.of_dropout_product_backward(
                x.data_ptr(), x.shape[0], x.shape[1], None if ids is None else ids.data_ptr(), seed, _threshold(p),
                1.0 / (1.0 - p), a.data_ptr(), a.shape[0], g.data_ptr(), None if grad_x is None else grad_x.data_ptr(),
                None if grad_a is None else grad_a.data_ptr(), torch.get_num_threads()) != 0:
            raise MemoryError("the dropout product kernel could not allocate its gradient scratch")
        return grad_x, grad_a, None, None, None


def dropout_product(x: torch.Tensor, a: torch.Tensor, p: float, ids: torch.Tensor | None = None) -> torch.Tensor | None:
    """``dropout(x, p) @ a.T`` (training, ``0 < p < 1``) with :func:`keep_mask`'s masks in one native kernel, for
    float32 ``x [..., w]`` and a ``[r, w]`` weight on the CPU; rows hash as ``ids`` when given (packed rows).
    None where the kernel does not apply (another dtype or device, autocast, tracing, no native library): the
    caller then applies :func:`dropout` and its product."""
    if not (0.0 < p < 1.0 and x.dtype == torch.float32 and a.dtype == torch.float32 and x.device.type == "cpu"
            and a.device.type == "cpu" and a.dim() == 2 and x.dim() >= 1 and x.shape[-1] == a.shape[1]
            and x.numel() > 0 and _LIBRARY.runs_here()):
        return None
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    if ids is not None:
        ids = ids.to(torch.int64).contiguous()
    out = _DropoutProduct.apply(rows, a.contiguous(), p, _seed(), ids)
    return out.view(*x.shape[:-1], a.shape[0])
