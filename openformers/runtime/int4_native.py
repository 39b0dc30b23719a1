"""The native 4-bit matrix-vector kernel (``int4_native.c``): build, load, and the weight layout.

PyTorch's CPU int4 kernel (``_weight_int4pack_mm_for_cpu``) takes ~55 us for one row of a SmolLM2
projection: compute-bound, not bandwidth-bound, and three quarters of a llama.cpp decode step over the
whole model. ``int4_native.c`` multiplies the same 4-bit groups four rows at a time and writes float32 or
bfloat16 results directly, with the instructions the CPU has (:func:`simd`): AVX-512 bfloat16 dot products
(``vdpbf16ps``), else the nibbles unpacked to float32 and multiplied with AVX-512F or AVX2 + FMA. Every
build rounds the activations to bfloat16 and sums in float32; they differ only in summation order.

A 4-bit layer (``quantization/gguf_linear.py``'s ``QuantizedLinear``, or any layer with the protocol of
:func:`is_int4`) keeps PyTorch's layout as its own storage; the tiled copy the kernel reads belongs to
this module (:func:`layer_kernel`), made on first use and remade when the layer's tensors change, so
running a layer never changes its buffers.

The source is built and loaded by ``core/native.py`` (on first use, cached per source, CPU, flags and
compiler). Where that cannot be had, or ``OPENFORMERS_NATIVE=0`` is set, :func:`library` returns None and callers
use PyTorch's kernel. A CPU with neither AVX-512 nor AVX2 builds the portable loops of the same file;
callers ask :func:`fast` before preferring the library (on x86 always, elsewhere not), and a layer asks its kernel
(:meth:`NativeInt4.takes`) whether it runs a call's rows or leaves them to PyTorch's kernel, where that one was
measured as fast (:data:`PYTORCH_FROM_ROWS`: bfloat16 rows of 2 or more on the AVX-512F build).
"""
from __future__ import annotations

import ctypes
import platform
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openformers.core import native

_SOURCE = Path(__file__).with_name("int4_native.c")


class Int4Weight(ctypes.Structure):
    """``of_int4_weight``: the pointers of a :class:`NativeInt4` and its shape."""

    _fields_ = [("q", ctypes.c_void_p), ("sz", ctypes.c_void_p), ("out", ctypes.c_int64), ("in_", ctypes.c_int64),
                ("dense", ctypes.c_void_p), ("dense1", ctypes.c_void_p), ("dense2", ctypes.c_void_p),
                ("split1", ctypes.c_int64), ("split2", ctypes.c_int64)]


def struct_mismatch(lib: ctypes.CDLL) -> str | None:
    """None when this module's ctypes view of ``of_int4_weight`` has the C side's size and offsets; else
    what differs (the library is then not used)."""
    want = (ctypes.sizeof(Int4Weight), Int4Weight.dense.offset, Int4Weight.split2.offset)
    got = tuple(int(lib.of_layout(i)) for i in range(3))
    return None if want == got else f"of_int4_weight: ctypes (size, dense, split2) {want} != C {got}"


def _setup(lib: ctypes.CDLL) -> None:
    lib.of_has_bf16_dot.restype = ctypes.c_int
    lib.of_simd.restype = ctypes.c_int
    lib.of_dense_matvec.restype = ctypes.c_int
    lib.of_dense_matvec.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_int]
    lib.of_layout.restype = ctypes.c_int64
    lib.of_layout.argtypes = [ctypes.c_int]
    lib.of_int4_matmul.restype = ctypes.c_int
    lib.of_int4_matmul.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p,
                                   ctypes.c_int, ctypes.c_int]
    lib.of_llama_step.restype = ctypes.c_int
    lib.of_llama_step.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_int64, ctypes.c_int]
    lib.of_llama_step_rows.restype = ctypes.c_int
    lib.of_llama_step_rows.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]


_LIBRARY = native.NativeLibrary(_SOURCE, _setup, describe=lambda lib: f"{simd(lib)} products")
build, load = _LIBRARY.build, _LIBRARY.load


_CHECKED: dict[int, str | None] = {}


def library() -> ctypes.CDLL | None:
    """The built library, or None where it cannot be had (see the module docstring) or where its structures
    do not match this module's ctypes view of them."""
    lib = _LIBRARY.get()
    if lib is None:
        return None
    key = id(lib)
    if key not in _CHECKED:
        _CHECKED[key] = struct_mismatch(lib)
    return None if _CHECKED[key] else lib


SIMD = {3: "AVX-512 BF16", 2: "AVX-512F", 1: "AVX2+FMA", 0: "portable"}


def simd(lib: ctypes.CDLL | None = None) -> str | None:
    """Which products ``lib`` (by default :func:`library`'s) runs: "AVX-512 BF16" (bfloat16 dot products),
    "AVX-512F" or "AVX2+FMA" (float32 products of the unpacked nibbles), "portable" (plain loops); None where
    there is no library."""
    lib = library() if lib is None else lib
    return None if lib is None else SIMD[int(lib.of_simd())]


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

# From how many bfloat16 rows up a 4-bit layer runs PyTorch's int4 kernel rather than this library's products, per
# build (:func:`simd`): where PyTorch's kernel was measured as fast or faster (``benchmarks/bench_int4_builds.py``,
# ``benchmarks/RESULTS.md``). The AVX-512F build sums 5 float32 multiply-adds per 16 lanes of 4 products a row
# (the group scale is applied to each pair of groups, to keep its summation order); PyTorch's AVX-512 kernel 4,
# its dequantization shared by 4 rows: from 2 rows up it is as fast (2, 3 rows) or ~1.15x faster (4 to 64).
# Float32 rows stay here: PyTorch's kernel rounds its results to bfloat16, these products give float32.
PYTORCH_FROM_ROWS = {"AVX-512F": 2}


def fast() -> bool:
    """The library is there and runs ahead of PyTorch's kernels: on x86 every build (the SIMD products, and
    the portable loops, which on an x86-64 CPU without AVX2 are ~2x PyTorch's int4 kernel there:
    ``benchmarks/RESULTS.md``); elsewhere, where this file has no SIMD path and nothing was measured, never."""
    lib = library()
    return lib is not None and (_X86 or int(lib.of_simd()) > 0)


def pack(q: torch.Tensor, sz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``q [out, in]`` in 0..15 and its bfloat16 ``(scale, zero)`` pairs ``sz [out, groups, 2]`` (a value is
    ``(q - 8) * scale + zero`` per group of 32) -> the kernel's ``(bytes [out, in / 2], pairs [out * groups * 2])``
    in tiles of 4 rows (layout in ``int4_native.c``)."""
    out_f, in_f = q.shape
    tiles, pairs = out_f // 4, in_f // 64
    a = q.numpy().astype(np.uint8).reshape(tiles, 4, pairs, 2, 2, 8, 2)  # tile, row, pair, group, half, j // 2, j % 2
    b = a[:, :, :, :, 0] | (a[:, :, :, :, 1] << 4)  # tile, row, pair, group, j // 2, j % 2
    b = np.ascontiguousarray(b.transpose(0, 2, 1, 4, 3, 5)).reshape(out_f, in_f // 2)  # tile, pair, row, j // 2, group, j % 2
    return torch.from_numpy(b), tile_pairs(sz)


def tile_pairs(sz: torch.Tensor) -> torch.Tensor:
    """``[out, groups, 2]`` (scale, zero) -> the kernel's order ``[out / 4, groups / 2, 4, 2, 2]``, flat, bfloat16."""
    out_f, groups, _ = sz.shape
    return sz.to(torch.bfloat16).reshape(out_f // 4, 4, groups // 2, 2, 2).transpose(1, 2).reshape(-1)


def untile_pairs(tiled: torch.Tensor, out_f: int) -> torch.Tensor:
    """Inverse of :func:`tile_pairs`: ``[out, groups, 2]``."""
    groups = tiled.numel() // (out_f * 2)
    return tiled.reshape(out_f // 4, groups // 2, 4, 2, 2).transpose(1, 2).reshape(out_f, groups, 2)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack` for the values: kernel bytes ``[out, in / 2]`` -> ``[out, in]`` in 0..15."""
    out_f, half = packed.shape
    b = packed.numpy().reshape(out_f // 4, half // 32, 4, 8, 2, 2)  # tile, pair, row, j // 2, group, j % 2
    b = b.transpose(0, 2, 1, 4, 3, 5)  # tile, row, pair, group, j // 2, j % 2
    a = np.stack([b & 0x0F, b >> 4], axis=4)  # tile, row, pair, group, half, j // 2, j % 2
    return torch.from_numpy(np.ascontiguousarray(a).reshape(out_f, half * 2))


class NativeInt4:
    """One linear layer's 4-bit weights in the kernel's layout, callable on ``[rows, in]`` activations.

    ``q`` is the ``[out, in / 2]`` byte tensor and ``sz`` the bfloat16 pairs of :func:`pack` (a
    ``QuantizedLinear`` keeps them as its ``qweight`` and ``scales_and_zeros``).
    """

    def __init__(self, q: torch.Tensor, sz: torch.Tensor) -> None:
        if q.dtype != torch.uint8 or sz.dtype != torch.bfloat16 or not (q.is_contiguous() and sz.is_contiguous()):
            raise ValueError(
                f"NativeInt4 takes contiguous uint8 bytes and bfloat16 (scale, zero) pairs; got q {q.dtype} "
                f"{tuple(q.shape)} (contiguous: {q.is_contiguous()}), sz {sz.dtype} {tuple(sz.shape)} "
                f"(contiguous: {sz.is_contiguous()}): build them with int4_native.pack")
        if q.dim() != 2 or q.shape[0] % 4 or (q.shape[1] * 2) % 64 or q.shape[0] == 0:
            raise ValueError(f"NativeInt4: q is {tuple(q.shape)}; [out, in / 2] wanted with out a multiple of 4 and "
                             "in a multiple of 64 (the kernel's tiles)")
        if sz.numel() != q.shape[0] * (q.shape[1] * 2 // 32) * 2:
            raise ValueError(f"NativeInt4: sz holds {sz.numel()} values; a [{q.shape[0]}, {q.shape[1] * 2}] weight "
                             f"needs {q.shape[0] * (q.shape[1] * 2 // 32) * 2} (a scale and a zero per group of 32)")
        if q.device.type != "cpu" or sz.device.type != "cpu":
            raise ValueError(f"NativeInt4: q on {q.device} and sz on {sz.device}; the kernel reads CPU memory")
        self.q, self.sz = q, sz
        self.out_features, self.in_features = q.shape[0], q.shape[1] * 2
        self.struct = Int4Weight(q.data_ptr(), sz.data_ptr(), self.out_features, self.in_features, None, None, None,
                                 self.out_features, self.out_features)
        self.ref = ctypes.byref(self.struct)
        self.lib = library()
        if self.lib is None:
            raise RuntimeError(f"the native int4 kernel is not available: {_LIBRARY.error or 'OPENFORMERS_NATIVE=0'}")
        self._from = (None, None)  # (library, the row count from which takes() leaves bfloat16 rows to PyTorch)

    @classmethod
    def from_values(cls, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> "NativeInt4":
        """From ``q [out, in]`` and ``[out, groups]`` scale and zero (rounded to bfloat16)."""
        return cls(*pack(q, torch.stack([scale, zero], dim=-1)))

    def takes(self, rows: int, dtype: torch.dtype) -> bool:
        """Whether a layer runs ``rows`` rows of ``dtype`` on this kernel (True) or on PyTorch's int4 kernel
        (False: bfloat16 rows from the row count of :data:`PYTORCH_FROM_ROWS` up, where that kernel is as fast and
        gives the same bfloat16 results but for rounding). One row, a decode step, and float32 rows always run
        here. Either way a row's result does not depend on the other rows of the call; a row alone and the same
        row in a call of several may differ by the two kernels' roundings."""
        if dtype != torch.bfloat16:
            return True
        lib, limit = self._from
        if lib is not self.lib:  # asked once per library (its build does not change), not at every product
            limit = PYTORCH_FROM_ROWS.get(simd(self.lib))
            self._from = (self.lib, limit)
        return limit is None or rows < limit

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.q, self.sz))

    def __call__(self, x: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x [rows, in]`` -> ``[rows, out]`` in ``out_dtype`` (float32 or bfloat16; by default ``x``'s dtype
        where it is one of those, else float32). Activations other than float32 and bfloat16 are cast to
        float32 first."""
        if x.dim() != 2 or x.shape[1] != self.in_features or x.device.type != "cpu":
            raise ValueError(f"of_int4_matmul: x is {tuple(x.shape)} on {x.device}; [rows, {self.in_features}] "
                             "on the CPU wanted")
        if x.dtype not in (torch.float32, torch.bfloat16):
            x = x.float()
        out_dtype = x.dtype if out_dtype is None else out_dtype
        if out_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"of_int4_matmul: out_dtype {out_dtype}; float32 or bfloat16 wanted")
        x = x.contiguous()
        if x.shape[0] == 0:
            return torch.empty(0, self.out_features, dtype=out_dtype)
        y = torch.empty(x.shape[0], self.out_features, dtype=out_dtype)
        rc = self.lib.of_int4_matmul(self.ref, x.data_ptr(), int(x.dtype == torch.bfloat16), x.shape[0], y.data_ptr(),
                                     int(out_dtype == torch.bfloat16), torch.get_num_threads())
        if rc == -2:
            raise ValueError(f"of_int4_matmul: a [{self.out_features}, {self.in_features}] weight and {x.shape[0]} "
                             "rows: sizes the kernel does not take (out a multiple of 4, in of 64)")
        if rc != 0:
            raise MemoryError("the native int4 kernel could not allocate its activation scratch")
        return y


def is_int4(module: Any) -> bool:
    """True for a 4-bit linear layer of the protocol the runtime reads: a class attribute ``int4_linear = True``,
    ``in_features``, ``out_features``, ``group_size``, ``bias``, ``compute_dtype``, the buffers ``qweight`` and
    ``scales_and_zeros`` (PyTorch's ``_weight_int4pack_mm_for_cpu`` layout), and ``int4_values()`` (``[out, in]``
    in 0..15) and ``int4_pairs()`` (``[out, groups, 2]``: each group's scale and zero, ``(q - 8) * scale + zero``)."""
    return getattr(type(module), "int4_linear", False) is True


def _wanted(layer: Any) -> bool:
    qw, sz = layer.qweight, layer.scales_and_zeros
    return (sz.dtype == torch.bfloat16 and layer.group_size == 32 and layer.in_features % 64 == 0
            and qw.device.type == "cpu" and not qw.is_meta and fast())


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return -1


def _stamp(layer: Any) -> tuple:
    qw, sz = layer.qweight, layer.scales_and_zeros
    return (qw.data_ptr(), _version(qw), sz.data_ptr(), _version(sz))


# layer -> (stamp of its buffers, its kernel over a tiled copy); a copy, never the layer's own storage
_KERNELS: "weakref.WeakKeyDictionary[Any, tuple[tuple, NativeInt4]]" = weakref.WeakKeyDictionary()


def layer_kernel(layer: Any) -> NativeInt4 | None:
    """The native kernel over a tiled copy of ``layer``'s weights (an :func:`is_int4` layer), made or remade when
    its buffers changed; None where PyTorch's kernel runs (no library, a compute dtype other than bfloat16, a
    group size other than 32)."""
    if not _wanted(layer):
        return None
    stamp = _stamp(layer)
    entry = _KERNELS.get(layer)
    if entry is not None and entry[0] == stamp:
        return entry[1]
    _KERNELS.pop(layer, None)  # the outdated copy goes before its replacement is made
    with torch.inference_mode(False), torch.no_grad():
        kernel = NativeInt4(*pack(layer.int4_values(), layer.int4_pairs()))
    _KERNELS[layer] = (stamp, kernel)
    return kernel


def fused_kernel(layers: tuple[Any, ...]) -> NativeInt4 | None:
    """One kernel over the tiled rows of ``layers`` one after the other (the product of all of them), or None
    where :func:`layer_kernel` would give None for one of them. Each layer's own kernel then reads its rows of
    the same copy (one copy of the weights)."""
    if not all(_wanted(m) for m in layers):
        return None
    with torch.inference_mode(False), torch.no_grad():
        parts = [pack(m.int4_values(), m.int4_pairs()) for m in layers]
        q = torch.cat([p[0] for p in parts])
        sz = torch.cat([p[1] for p in parts])
    del parts
    row = pair = 0
    for m in layers:
        n_pairs = m.out_features * (m.in_features // m.group_size) * 2
        _KERNELS[m] = (_stamp(m), NativeInt4(q[row: row + m.out_features], sz[pair: pair + n_pairs]))
        row, pair = row + m.out_features, pair + n_pairs
    return NativeInt4(q, sz)


_FAST: list[bool] = []


def dense_matvec(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """``weight [out, in] @ x`` for a contiguous float32 CPU ``weight`` and one float32 row ``x`` (``[..., in]``
    with one row), as ``[..., out]``; None where the library is not there or not preferred (:func:`fast`; the
    caller runs PyTorch's product)."""
    if not _FAST:
        _FAST.append(fast())
    if not _FAST[0]:
        return None
    lib = library()
    if (weight.dim() != 2 or weight.dtype != torch.float32 or not weight.is_contiguous() or weight.device.type != "cpu"
            or x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() < 1 or x.shape[-1] != weight.shape[1]
            or x.numel() != weight.shape[1] or weight.shape[0] == 0):
        return None  # not one float32 row for a contiguous float32 [out, in] weight: PyTorch's product
    row = x.reshape(-1).contiguous()
    y = torch.empty(*x.shape[:-1], weight.shape[0], dtype=torch.float32)
    lib.of_dense_matvec(weight.data_ptr(), weight.shape[0], weight.shape[1], row.data_ptr(), y.data_ptr(),
                        torch.get_num_threads())
    return y
