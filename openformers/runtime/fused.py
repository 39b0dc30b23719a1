"""Inference-time projections: groups of ``nn.Linear`` layers that read the same input, and their CPU kernels.

Decoding one token is a chain of small matrix-vector products, bound by the bytes of weight read.
What makes those reads cheaper on the CPU lives here, and none of it touches the layers: their
parameters keep their storage, strides and values whatever runs.

* Threads: a float32 product of up to 64 rows runs one contiguous block of output rows per thread
  (``_row_blocks``) on the weight as it lies.
* Packed copies: bf16 products of up to 32 rows and float32 decode steps of a batch run on a copy of
  the weights in oneDNN's blocked layout (``packed_weights.py``, extra memory within a budget); a
  group (q/k/v, gate/up) gets one copy of its weights stacked, so it runs as one product.
* 4-bit layers (the :func:`~openformers.runtime.int4_native.is_int4` protocol) run on the native
  kernel over a tiled copy the runtime keeps (``int4_native.py``); a group's copy is one tiled
  buffer, so it runs as one product too.

Copies are rebuilt when a source tensor is replaced or updated in place (pointer and version counter),
and are kept in tables of this package keyed weakly by the owning module: copying or pickling a model
carries none of them. Everything here runs only when no gradient is recorded and the layers are plain
``nn.Linear`` (or 4-bit) without hooks (a LoRA layer reaches here as the runtime's stand-in ``nn.Linear``
over a merged copy, ``adapters.py``); other adapters and training take the ordinary per-layer path.
"""
from __future__ import annotations

import functools
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from openformers.modules.dense import is_plain_linear, run_linear
from openformers.runtime import int4_native
from openformers.runtime.int4_native import is_int4
from openformers.runtime.packed_weights import packed_weight, run_packed, tensor_version, wants_packed

_HALF = (torch.bfloat16, torch.float16)

# owner module -> {slot: (stamp of the layers' tensors, kernel)} for 4-bit groups
_INT4: "weakref.WeakKeyDictionary[nn.Module, dict[str, tuple]]" = weakref.WeakKeyDictionary()


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def fusable(*layers: nn.Module) -> bool:
    """True when no grad is recorded and ``layers`` are all plain ``nn.Linear`` (or all 4-bit layers with one
    group size and compute dtype), with matching bias presence and no forward hooks (a hooked layer must run
    as itself)."""
    if torch.is_grad_enabled():
        return False
    first = layers[0]
    if is_plain_linear(first):
        # runs for every group at every decode step: the parameters are read from ``_parameters``
        # directly (``module.weight`` goes through ``nn.Module.__getattr__``, ~1 us a read)
        w = first._parameters.get("weight")
        if w is None:
            return False
        has_bias = first._parameters.get("bias") is not None
        for m in layers:
            if not is_plain_linear(m) or m._forward_hooks or m._forward_pre_hooks:
                return False
            params = m._parameters
            mw = params.get("weight")
            if (mw is None or (params.get("bias") is not None) != has_bias or mw.dtype != w.dtype
                    or mw.device != w.device or mw.shape[1] != w.shape[1]):
                return False
        return True
    if any(_hooked(m) for m in layers):
        return False
    has_bias = getattr(first, "bias", None) is not None
    if is_int4(first) and first.qweight.device.type == "cpu":
        return all(
            is_int4(m) and m.group_size == first.group_size and m.scales_and_zeros.dtype == first.scales_and_zeros.dtype
            and (m.bias is not None) == has_bias for m in layers
        )
    return False


Kernel = Callable[[torch.Tensor], torch.Tensor]


def fused_linear(owner: nn.Module, slot: str, layers: tuple[nn.Module, ...], x: torch.Tensor) -> torch.Tensor:
    """``cat([m(x) for m in layers], -1)`` for layers that :func:`fusable` accepts; ``slot`` names the group
    on ``owner`` (one per group). See :func:`fused_kernel`."""
    return fused_kernel(owner, slot, layers, x)(x)


def grouped_outputs(owner: nn.Module, slot: str, layers: tuple[nn.Module, ...], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tuple(m(x) for m in layers)`` for layers that :func:`fusable` accepts: one product on a shared copy
    where :func:`fused_kernel` makes one (views of its output), else each layer on its own weight (no
    concatenation to split again)."""
    first = layers[0]
    if is_plain_linear(first) and not wants_packed(x, first._parameters["weight"]):
        return tuple(linear(x, m._parameters["weight"], m._parameters.get("bias")) for m in layers)
    return fused_linear(owner, slot, layers, x).split([m.out_features for m in layers], dim=-1)


def _int4_stamp(layers: tuple[nn.Module, ...]) -> tuple:
    tensors = [t for m in layers for t in (m.qweight, m.scales_and_zeros, m.bias) if t is not None]
    return tuple((t.data_ptr(), tensor_version(t), t.dtype, t.device) for t in tensors)


def fused_kernel(owner: nn.Module, slot: str, layers: tuple[nn.Module, ...], x: torch.Tensor) -> Kernel:
    """The product :func:`fused_linear` runs for inputs shaped and typed like ``x``, as a callable over the
    weights as they are now (any copy resolved once): valid while the layers' parameters stay the same
    tensors, unchanged in place (``decode.py`` keeps these across decode steps).

    Plain layers run on one packed copy of their stacked weights where :func:`wants_packed` says so (those
    give the stacked and the separate weights the same bits); otherwise each layer runs as :func:`linear`
    on its own weight and the outputs are concatenated. 4-bit layers run on one native kernel over their
    stacked tiled rows, or one by one on PyTorch's kernel."""
    first = layers[0]
    if is_plain_linear(first):
        # parameters read from ``_parameters``: this runs for every group at every decode step
        weights = tuple(m._parameters["weight"] for m in layers)
        biases = tuple(m._parameters.get("bias") for m in layers)
        if wants_packed(x, weights[0]):
            packed = packed_weight(owner, slot, lambda: torch.cat(weights), weights)
            if packed is not None:
                bias = torch.cat(biases) if biases[0] is not None else None
                return lambda x: run_packed(x, packed, bias)
        return lambda x: torch.cat([linear(x, w, b) for w, b in zip(weights, biases)], dim=-1)
    key = _int4_stamp(layers)
    slots = _INT4.setdefault(owner, {})
    cached = slots.get(slot)
    if cached is None or cached[0] != key:
        slots.pop(slot, None)  # the outdated copy goes before its replacement is made
        native = int4_native.fused_kernel(layers)
        bias = torch.cat([m.bias.detach() for m in layers]) if layers[0].bias is not None else None
        slots[slot] = cached = (key, native, bias)
    _, native, bias = cached
    if native is None:
        return lambda x: torch.cat([m(x) for m in layers], dim=-1)

    def native_int4(x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if not native.takes(x.numel() // shape[-1], x.dtype):  # PyTorch's int4 kernel, as fast: each layer's own
            return torch.cat([m(x) for m in layers], dim=-1)
        y = native(x.reshape(-1, shape[-1])).to(x.dtype).reshape(*shape[:-1], native.out_features)
        return y if bias is None else y + bias.to(x.dtype)
    native_int4.native, native_int4.bias = native, bias  # for callers that run the kernel themselves
    return native_int4


SPLIT_MAX_ROWS = 64  # up to this many rows a float32 product runs one block of output rows per thread


def _row_blocks(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, blocks: int) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a contiguous ``[out, in]`` float32 ``weight`` as one
    batched matmul of ``blocks`` contiguous ``[out / blocks, in]`` blocks of it, at most one per thread
    (:func:`_blocks`: as many as threads when they divide ``out``, else the most that do).

    The CPU GEMM runs a product of a few rows on one thread, or splits it so that the threads wait
    on each other, and reads ~10-20 GB/s of weight; one contiguous block per thread streams it at
    up to the machine's memory bandwidth (``benchmarks/bench_products.py``, SmolLM2's layer
    products, 425 MB, 2 AMD EPYC threads: one row ~1.8x faster than ``F.linear``, 8 to 64 rows
    1.07x to 1.16x; from 128 rows the products are compute-bound and no faster, so ``F.linear``).

    Several rows multiply as ``x @ block.T``, ``F.linear``'s operands: each output is summed as
    ``F.linear`` sums it for most shapes (bitwise equal for SmolLM2's from 2 to 256 rows; the
    GGUF logits test against transformers holds to 1e-4 with it). One row multiplies as
    ``block @ x.T``, a matrix-vector product (the other operand order runs ~1.4x slower for one
    row), whose sums round differently from ``F.linear``'s one-row GEMM, within float32 rounding.
    """
    rows = x.reshape(-1, x.shape[-1])
    out_features, in_features = weight.shape
    parts = weight.view(blocks, out_features // blocks, in_features)
    if rows.shape[0] == 1:
        y = torch.bmm(parts, rows.t().expand(blocks, in_features, 1)).view(1, out_features)
    else:  # [blocks, rows, out / blocks] -> [rows, out]
        y = torch.bmm(rows.expand(blocks, *rows.shape), parts.transpose(1, 2)).transpose(0, 1).reshape(rows.shape[0], -1)
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], out_features)


@functools.lru_cache(maxsize=256)
def _blocks(out_features: int, threads: int) -> int:
    """The most equal row blocks, at most one per thread, that ``out_features`` divides into."""
    return next(b for b in range(max(1, min(threads, out_features)), 0, -1) if out_features % b == 0)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` for inference on the CPU: a float32 product of up to ``SPLIT_MAX_ROWS`` rows
    runs one block of output rows per thread (:func:`_row_blocks`); a single half-precision row
    (a batch-1 decode step) runs as ``torch.mv`` (the bf16 GEMM path is slow for one row, the
    matrix-vector kernel is not; ``torch.addmv`` with a bias, rounded once as ``F.linear`` rounds)."""
    if x.device.type == "cpu" and x.shape[-1]:
        rows = x.numel() // x.shape[-1]
        if x.dtype == torch.float32 and weight.dtype == torch.float32 and 0 < rows <= SPLIT_MAX_ROWS:
            blocks = _blocks(weight.shape[0], torch.get_num_threads())
            if blocks > 1 and weight.is_contiguous():
                return _row_blocks(x, weight, bias, blocks)
            if rows == 1 and weight.is_contiguous():
                # one thread: the native row product reads the row-major weight ~2x faster than PyTorch's
                y = int4_native.dense_matvec(weight, x)
                if y is not None:
                    return y if bias is None else y + bias
        elif x.dtype in _HALF and rows == 1:  # with a bias: added before the one rounding, as F.linear does
            y = torch.mv(weight, x.reshape(-1)) if bias is None else torch.addmv(bias, weight, x.reshape(-1))
            return y.view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


def project(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; a plain ``nn.Linear`` at inference goes through :func:`linear` (or a packed copy);
    otherwise through :func:`~openformers.modules.dense.run_linear` (oneDNN while autograd records)."""
    if is_plain_linear(module) and not torch.is_grad_enabled() and not _hooked(module):
        return project_kernel(module, x)(x)
    return run_linear(module, x)


def project_kernel(module: nn.Linear, x: torch.Tensor) -> Kernel:
    """The product :func:`project` runs at inference for a plain ``nn.Linear`` and inputs like ``x``, resolved
    once (see :func:`fused_kernel`)."""
    params = module._parameters  # (not ``module.weight``: this runs for every layer at every decode step)
    weight, bias = params.get("weight"), params.get("bias")
    if weight is None:
        return module
    if wants_packed(x, weight):
        packed = packed_weight(module, "weight", weight, (weight,))
        if packed is not None:
            return lambda x: run_packed(x, packed, bias)
    return lambda x: linear(x, weight, bias)
