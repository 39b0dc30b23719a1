"""Inference-time projections: fused groups of ``nn.Linear`` layers and their CPU kernels.

Decoding one token is a chain of small matrix-vector products, bound by the bytes of weight
read. Two things make those reads cheaper on the CPU:

* Fusion: layers that read the same input (q/k/v, gate/up) run as one matmul over one
  concatenated weight. The concatenated buffer *becomes* the layers' storage: each layer's
  ``weight`` (and ``bias``) is re-pointed to its slice of the buffer, so fusing costs no memory,
  and in-place updates of a weight (optimizer steps, ``load_state_dict``, LoRA merges) are seen
  by the fused matmul at once. A weight that is replaced, moved or cast stops being a slice of
  the buffer; the next inference call notices (pointer and layout check) and builds a new one.
* Threads and packing: a float32 product of up to 64 rows runs one contiguous block of output
  rows per thread (``_row_blocks``); bf16 products of up to 32 rows and float32 decode steps of
  a batch run on packed copies of the weights (``modules/packed_weights.py``, extra memory within
  a budget). Weights keep their ``[out, in]`` row-major layout, except float32 weights while
  PyTorch runs one thread: those are stored ``[in, out]`` (a transposed view), which the CPU GEMM
  reads faster for a few rows on one thread (``_wants_transposed``). The layout is a property of
  the storage only: shapes, ``state_dict`` keys and values, and training are unchanged.

Both happen only when no gradient is recorded and the layers are plain ``nn.Linear`` without
hooks; adapters (LoRA and others) and training take the ordinary per-layer path. 4-bit
``QuantizedLinear`` layers fuse too (their packed rows and scales concatenate along the output
dimension); their fused copy is cached on the owning module and rebuilt when a source changes.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from openformers.modules.dense import run_linear
from openformers.modules.packed_weights import packed_weight, run_packed, tensor_version, wants_packed

# owner module -> {slot: (key of the layers' tensors, buffer shape, buffer strides, transposed)}; the buffer
# itself is reached through the first layer's weight, so a cast or replaced weight frees it
_SHARED: "weakref.WeakKeyDictionary[nn.Module, dict[str, tuple]]" = weakref.WeakKeyDictionary()

_HALF = (torch.bfloat16, torch.float16)


def _is_int4(m: nn.Module) -> bool:
    # the CPU int4 layer of openformers.quantization (duck-typed: modules do not import quantization)
    return type(m).__name__ == "QuantizedLinear" and hasattr(m, "qweight") and hasattr(m, "scales_and_zeros")


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def transposed_layout(weight: torch.Tensor) -> bool:
    """True when the ``[out, in]`` weight is stored ``[in, out]`` (a transposed view of it)."""
    return weight.dim() == 2 and weight.stride(0) == 1 and weight.shape[1] > 1


def _wants_transposed(weight: torch.Tensor) -> bool:
    """float32 CPU weights are stored ``[in, out]`` while PyTorch runs one thread: ``F.linear`` then
    reads them as ``x @ [in, out]``, which the CPU GEMM streams faster for one or two rows (a
    decode step) than the row-major ``[out, in]``: 1.27x and 1.40x, but 0.87x to 0.93x from 4 to
    64 rows (``benchmarks/bench_products.py --threads 1``; batch decode steps run on packed copies
    instead). With more threads the row blocks of :func:`_row_blocks` on the row-major layout are
    faster still."""
    return weight.dtype == torch.float32 and weight.device.type == "cpu" and torch.get_num_threads() == 1


def _relayout(weight: torch.Tensor, transposed: bool) -> None:
    """Store ``weight`` row-major, or ``[in, out]`` when ``transposed``: values, shape and the
    Parameter object stay the same."""
    with torch.inference_mode(weight.is_inference()), torch.no_grad():
        _repoint(weight, weight.t().contiguous().t() if transposed else weight.contiguous())


_KEEP_LAYOUTS: contextvars.ContextVar[bool] = contextvars.ContextVar("openformers_keep_layouts", default=False)


@contextlib.contextmanager
def keep_layouts() -> Iterator[None]:
    """Inference inside this block neither fuses weights nor makes packed copies: every layer runs
    as itself on the storage it has. A trainer evaluates under it, so that evaluating during
    training leaves the weights' storage (where each weight lies, which kernels it takes) as it
    was, and a resumed run stays bitwise equal to an uninterrupted one."""
    token = _KEEP_LAYOUTS.set(True)
    try:
        yield
    finally:
        _KEEP_LAYOUTS.reset(token)


def layouts_kept() -> bool:
    """True inside :func:`keep_layouts`."""
    return _KEEP_LAYOUTS.get()


def fusable(*layers: nn.Module) -> bool:
    """True when no grad is recorded and ``layers`` are all plain ``nn.Linear`` (or all 4-bit
    ``QuantizedLinear`` with one group size and compute dtype), with matching bias presence and
    no forward hooks (a hooked layer must run as itself)."""
    if torch.is_grad_enabled() or _KEEP_LAYOUTS.get():
        return False
    first = layers[0]
    if type(first) is nn.Linear:
        # runs for every group at every decode step: the parameters are read from ``_parameters``
        # directly (``module.weight`` goes through ``nn.Module.__getattr__``, ~1 us a read)
        w = first._parameters.get("weight")
        if w is None:
            return False
        has_bias = first._parameters.get("bias") is not None
        for m in layers:
            if type(m) is not nn.Linear or m._forward_hooks or m._forward_pre_hooks:
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
    if _is_int4(first) and first.qweight.device.type == "cpu":
        return all(
            _is_int4(m) and m.group_size == first.group_size and m.scales_and_zeros.dtype == first.scales_and_zeros.dtype
            and (m.bias is not None) == has_bias for m in layers
        )
    return False


def _repoint(tensor: torch.Tensor, view: torch.Tensor) -> None:
    tensor.data = view  # the Parameter object stays (optimizers, adapters and ties keep their reference)


def _build_native(natives: list, layers: tuple[nn.Module, ...]) -> tuple:
    # the native kernel's rows are whole tiles: bytes and (scale, zero) pairs concatenate along out, and each
    # layer then holds views of the fused tensors (one copy of the weights)
    bias = torch.cat([m.bias.detach() for m in layers]) if layers[0].bias is not None else None
    with torch.inference_mode(False):
        q = torch.cat([n.q for n in natives])
        sz = torch.cat([n.sz for n in natives])
    row = pair = 0
    for m, n in zip(layers, natives):
        m._share_native(q[row : row + n.out_features], sz[pair : pair + n.sz.numel()])
        row, pair = row + n.out_features, pair + n.sz.numel()
    return ((type(natives[0])(q, sz), bias),)


def _build_int4(layers: tuple[nn.Module, ...]) -> tuple:
    bias = torch.cat([m.bias.detach() for m in layers]) if layers[0].bias is not None else None
    # packed int4 rows ([out, in / 2]) and their [groups, out, 2] scales concatenate along out when
    # every part is a whole number of the kernel's row blocks (machine-dependent): a probe decides
    qweight = torch.cat([m.qweight for m in layers])
    scales = torch.cat([m.scales_and_zeros for m in layers], dim=1)
    group = layers[0].group_size
    probe = torch.randn(2, layers[0].in_features, generator=torch.Generator().manual_seed(0)).to(scales.dtype)
    parts = [torch.ops.aten._weight_int4pack_mm_for_cpu(probe, m.qweight, group, m.scales_and_zeros) for m in layers]
    if not torch.equal(torch.ops.aten._weight_int4pack_mm_for_cpu(probe, qweight, group, scales), torch.cat(parts, -1)):
        return (None,)  # not fusable on this machine: run the layers one by one
    return qweight, scales, bias, group


def _key(tensors: list[torch.Tensor]) -> tuple:
    return tuple((t.data_ptr(), t.stride(), t.dtype, t.device) for t in tensors)


def _share(layers: tuple[nn.Module, ...], transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the layers' weights (and biases) into one buffer and re-point every layer's
    parameters to their slices of it. Returns (weight buffer ``[sum(out), in]``, seen through a
    transposed view of ``[in, sum(out)]`` storage when ``transposed``; bias buffer)."""
    weights = [m.weight for m in layers]
    # plain tensors even inside inference_mode: they become parameters' storage and must stay trainable
    # (weights made under inference_mode are inference tensors already and stay so)
    with torch.inference_mode(weights[0].is_inference()), torch.no_grad():
        buf = torch.cat([w.t() for w in weights], dim=1).t() if transposed else torch.cat(weights)
        bias = torch.cat([m.bias for m in layers]) if layers[0].bias is not None else None
        start = 0
        for m in layers:
            stop = start + m.weight.shape[0]
            _repoint(m.weight, buf[start:stop])
            if bias is not None:
                _repoint(m.bias, bias[start:stop])
            start = stop
    return buf, bias


Kernel = Callable[[torch.Tensor], torch.Tensor]


def fused_linear(owner: nn.Module, slot: str, layers: tuple[nn.Module, ...], x: torch.Tensor) -> torch.Tensor:
    """``cat([m(x) for m in layers], -1)`` as one matmul over one weight buffer.

    Call only when :func:`fusable` says so. ``slot`` names the group on ``owner`` (one per fused
    group).

    Half-precision inputs of several rows (a prefill, a batch) run the layers one by one: a
    bf16/fp16 GEMM rounds its float32 accumulator once per output, but the kernel splits the
    reduction by the weight's shape and the thread count, so the stacked weight can round
    differently from the separate ones (SmolLM2's q/k/v: from 18 rows with 16 threads, 64 with
    4), and the logits drift from the unfused reference. A single row is a matrix-vector product
    whose outputs are independent dot products, identical either way, so decode steps fuse. The
    packed copies of ``modules/packed_weights.py`` (up to 32 rows) give the stacked and the separate
    weights the same bits, so those products fuse at every row count they serve.
    """
    return fused_kernel(owner, slot, layers, x)(x)


def fused_kernel(owner: nn.Module, slot: str, layers: tuple[nn.Module, ...], x: torch.Tensor) -> Kernel:
    """The product :func:`fused_linear` runs for inputs shaped and typed like ``x``, as a callable
    over the weights as they are now (the buffer or packed copy resolved once): valid while the
    layers' parameters stay the same tensors, unchanged in place (``models/llama/decode.py``
    keeps these across decode steps)."""
    first = layers[0]
    if type(first) is nn.Linear:
        # parameters read from ``_parameters``: this runs for every group at every decode step
        weights = tuple(m._parameters["weight"] for m in layers)
        biases = tuple(m._parameters.get("bias") for m in layers)
        if x.dtype in _HALF and x.numel() != x.shape[-1] and not wants_packed(x, weights[0]):
            return lambda x: torch.cat([F.linear(x, w, b) for w, b in zip(weights, biases)], dim=-1)
        key = _key([t for t in weights + biases if t is not None])
        slots = _SHARED.setdefault(owner, {})
        entry = slots.get(slot)
        transposed = _wants_transposed(weights[0])
        if entry is None or entry[0] != key or entry[3] != transposed:
            buf, bias = _share(layers, transposed)  # re-points the same Parameter objects: only their pointers change
            key = _key([t for t in weights + biases if t is not None])
            slots[slot] = entry = (key, buf.shape, buf.stride(), transposed)
        # the buffer, seen again through the first layer's slice (nothing else keeps it alive)
        buf = weights[0].as_strided(entry[1], entry[2], weights[0].storage_offset())
        bias = None
        if biases[0] is not None:
            bias = biases[0].as_strided((sum(b.shape[0] for b in biases),), (1,), biases[0].storage_offset())
        if wants_packed(x, buf):
            packed = packed_weight(owner, slot, buf, weights)
            if packed is not None:
                return lambda x: run_packed(x, packed, bias)
        return lambda x: linear(x, buf, bias)
    natives = [m._native() for m in layers]  # first: it may move qweight into the native kernel's layout

    def stamp() -> tuple:
        tensors = [t for m in layers for t in (m.qweight, m.scales_and_zeros, m.bias) if t is not None]
        return tuple((t.data_ptr(), tensor_version(t), t.dtype, t.device) for t in tensors)
    key = stamp()
    cached = owner.__dict__.get(slot)
    if cached is None or cached[0] != key:
        native = all(n is not None for n in natives)
        built = _build_native(natives, layers) if native else _build_int4(layers)
        owner.__dict__[slot] = cached = (stamp() if native else key, *built)  # the layers now hold views
    if len(cached) == 2:
        if cached[1] is None:
            return lambda x: torch.cat([m(x) for m in layers], dim=-1)
        native, bias = cached[1]

        def native_int4(x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            y = native(x.reshape(-1, shape[-1])).to(x.dtype).reshape(*shape[:-1], native.out_features)
            return y if bias is None else y + bias.to(x.dtype)
        native_int4.native, native_int4.bias = native, bias  # for callers that run the kernel themselves
        return native_int4
    _, qweight, scales, bias, group = cached

    def int4(x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        # [*, in] -> [rows, in] -> [rows, out], activations in the kernel's compute dtype
        rows = x.reshape(-1, shape[-1]).to(scales.dtype).contiguous()  # the kernel takes contiguous rows only
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, qweight, group, scales)
        y = y.to(x.dtype).reshape(*shape[:-1], qweight.shape[0])
        return y if bias is None else y + bias.to(x.dtype)
    return int4


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
    matrix-vector kernel is not)."""
    if x.device.type == "cpu" and x.shape[-1]:
        rows = x.numel() // x.shape[-1]
        if x.dtype == torch.float32 and weight.dtype == torch.float32 and 0 < rows <= SPLIT_MAX_ROWS:
            blocks = _blocks(weight.shape[0], torch.get_num_threads())
            if blocks > 1 and weight.is_contiguous():
                return _row_blocks(x, weight, bias, blocks)
        elif x.dtype in _HALF and rows == 1:
            y = torch.mv(weight, x.reshape(-1)).view(*x.shape[:-1], weight.shape[0])
            return y if bias is None else y + bias
    return F.linear(x, weight, bias)


def project(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; a plain ``nn.Linear`` at inference goes through :func:`linear`; otherwise through
    :func:`~openformers.modules.dense.run_linear` (oneDNN while autograd records)."""
    if type(module) is nn.Linear and not torch.is_grad_enabled() and not _KEEP_LAYOUTS.get() and not _hooked(module):
        return project_kernel(module, x)(x)
    return run_linear(module, x)


def project_kernel(module: nn.Linear, x: torch.Tensor) -> Kernel:
    """The product :func:`project` runs at inference for a plain ``nn.Linear`` and inputs like
    ``x``, resolved once (see :func:`fused_kernel`)."""
    params = module._parameters  # (not ``module.weight``: this runs for every layer at every decode step)
    weight, bias = params.get("weight"), params.get("bias")
    if weight is None:
        return module
    if weight.device.type == "cpu" and weight.dim() == 2 and min(weight.shape) > 1:
        transposed = _wants_transposed(weight)
        if transposed_layout(weight) != transposed or not (transposed or weight.is_contiguous()):
            _relayout(weight, transposed)
            weight = params["weight"]
    if wants_packed(x, weight):
        packed = packed_weight(module, "weight", weight, (weight,))
        if packed is not None:
            return lambda x: run_packed(x, packed, bias)
    return lambda x: linear(x, weight, bias)
