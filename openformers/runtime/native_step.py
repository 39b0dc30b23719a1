"""Decode steps of Llama models in one native call (``of_llama_step`` in ``int4_native.c``).

A decode step of one sequence on a few CPU cores spends as much time in Python and in several hundred
small PyTorch operators as in reading the weights. Where every projection is either on the native 4-bit
kernel (a 4-bit layer, ``int4_native.is_int4``) or a plain row-major weight in the activations' dtype
(float32 or bfloat16; q/k/v and gate/up are read where each parameter lies), the decode plan (``decode.py``) hands the whole stack of layers to
``of_llama_step``: one call per step runs the norms, products, rotary embedding, attention over the
cache (written in place through ``DynamicCache.reserve_all``) and residuals, with the activations
rounded to bfloat16 wherever PyTorch's bfloat16 operators round them. :func:`native_step` says when it
applies; anything else keeps the plan's PyTorch path.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Any

import torch
from torch import nn

from openformers.modules.cache import DynamicCache
from openformers.modules.mlp import ACTIVATIONS
from openformers.runtime import int4_native
from openformers.runtime.int4_native import Int4Weight, is_int4


class _Layer(ctypes.Structure):
    """``of_llama_layer``."""

    _fields_ = [("norm1", ctypes.c_void_p), ("norm2", ctypes.c_void_p), ("qkv", Int4Weight), ("o", Int4Weight),
                ("gate_up", Int4Weight), ("down", Int4Weight), ("k_cache", ctypes.c_void_p), ("v_cache", ctypes.c_void_p),
                ("capacity", ctypes.c_int64)]


class _Model(ctypes.Structure):
    """``of_llama``."""

    _fields_ = [("layers", ctypes.c_int64), ("hidden", ctypes.c_int64), ("heads", ctypes.c_int64),
                ("kv_heads", ctypes.c_int64), ("head_dim", ctypes.c_int64), ("inter", ctypes.c_int64),
                ("eps", ctypes.c_float), ("scaling", ctypes.c_float), ("bf16", ctypes.c_int),
                ("layer", ctypes.POINTER(_Layer))]


class NativeStep:
    """The layers of one model as ``of_llama_step``'s structures (weights held, cache pointers per step)."""

    def __init__(self, lib: ctypes.CDLL, layers: list[tuple[nn.Module, ...]], weights: list[list[tuple]],
                 dtype: torch.dtype) -> None:
        attn0, mlp0, norm0 = layers[0][1], layers[0][6], layers[0][10]
        self.lib = lib
        self.count = len(layers)
        self.array = (_Layer * self.count)()
        self.keep: list[Any] = []  # the tensors the structures point into
        for i, (mods, found) in enumerate(zip(layers, weights)):
            norm1, norm2 = mods[10], mods[11]
            entry = self.array[i]
            entry.norm1, entry.norm2 = norm1.weight.data_ptr(), norm2.weight.data_ptr()
            for name, (struct, held) in zip(("qkv", "o", "gate_up", "down"), found):
                setattr(entry, name, struct)
                self.keep.append(held)
            self.keep += [norm1.weight, norm2.weight]
        self.model = _Model(self.count, norm0.weight.shape[0], attn0.num_heads, attn0.num_key_value_heads, attn0.head_dim,
                            mlp0.gate_proj.out_features, float(norm0.variance_epsilon), float(attn0.scaling),
                            int(dtype == torch.bfloat16), self.array)
        self.ref = ctypes.byref(self.model)
        self.caches: list[Any] = [None] * self.count  # the (key, value) buffers the structures point into
        self.lock = threading.Lock()

    def __call__(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: DynamicCache) -> torch.Tensor | None:
        """The layers' output for ``hidden`` [b, 1, hidden_size], or None (nothing done) when the sequences are
        not all at one position (``position_ids`` given per row without a mask) or the cache does not hold
        this batch in the activations' dtype, with every layer at one length."""
        b = hidden.shape[0]
        if b > 1 and not torch.equal(cos.amax(0), cos.amin(0)):
            return None
        keys = cache.keys[0]
        if keys.shape[0] != b or keys.dtype != hidden.dtype:
            return None
        with self.lock:  # the structures point at one cache at a time; the C call runs without the GIL
            try:
                n, buffers = cache.reserve_all(1)
            except ValueError:  # layers of different lengths (a cache edited by hand): PyTorch's layers
                return None
            for i, bufs in enumerate(buffers):
                if self.caches[i] is not bufs:  # a new buffer (the cache grew or was replaced): point at it
                    entry = self.array[i]
                    entry.k_cache, entry.v_cache, entry.capacity = bufs[0].data_ptr(), bufs[1].data_ptr(), bufs[0].shape[-2]
                    self.caches[i] = bufs
            out = hidden.clone(memory_format=torch.contiguous_format)
            cos32 = cos[0].reshape(-1).float().contiguous()  # no padding: every sequence is at the same position
            sin32 = sin[0].reshape(-1).float().contiguous()
            if self.lib.of_llama_step(self.ref, out.data_ptr(), b, cos32.data_ptr(), sin32.data_ptr(), n,
                                      torch.get_num_threads()) != 0:
                raise MemoryError("the native decode step could not allocate its scratch memory")
            cache.advance_all(1)
        return out


def _weight(parts: tuple[nn.Module, ...], kernel: Any, dtype: torch.dtype) -> tuple[Int4Weight, Any] | None:
    """The ``of_int4_weight`` of a product of ``parts`` (their outputs one after the other): the native 4-bit
    kernel's (``kernel.native`` of a fused kernel, or a lone 4-bit layer's), or up to three plain row-major
    weights in the activation dtype read where they lie (each part's rows a multiple of 4, but the last);
    None otherwise. Biases are not supported. Returns the structure and what it points into."""
    native = getattr(kernel, "native", None)
    if native is not None:
        return (native.struct, native) if kernel.bias is None else None
    if len(parts) == 1 and is_int4(parts[0]):
        native = int4_native.layer_kernel(parts[0]) if parts[0].bias is None else None
        return None if native is None else (native.struct, native)
    if len(parts) > 3:
        return None
    weights = []
    for m in parts:
        if type(m) is not nn.Linear or m.bias is not None:
            return None
        weights.append(m.weight)
    first = weights[0]
    if first.device.type != "cpu":
        return None
    for w in weights:
        if w.dtype != dtype or not w.is_contiguous() or w.shape[1] != first.shape[1]:
            return None
    if any(w.shape[0] % 4 for w in weights[:-1]):  # the kernel reads whole tiles of 4 rows from one part
        return None
    out = sum(w.shape[0] for w in weights)
    ptrs = [w.data_ptr() for w in weights] + [None] * (3 - len(weights))
    ends = [sum(w.shape[0] for w in weights[: i + 1]) for i in range(len(weights))] + [out] * (3 - len(weights))
    return Int4Weight(None, None, out, first.shape[1], ptrs[0], ptrs[1], ptrs[2], ends[0], ends[1]), weights


def native_step(layers: list[tuple[nn.Module, ...]], kernels: list[tuple], hidden: torch.Tensor,
                cos: torch.Tensor) -> NativeStep | None:
    """A :class:`NativeStep` for these resolved layers, or None when they must run in PyTorch: activations
    other than float32 or bfloat16, a projection with a bias or neither on the native 4-bit kernel nor a
    plain row-major weight in the activations' dtype, an activation other than SiLU, partial rotary
    embeddings, norms in another dtype. (What changes from step to step, masks and the cache, the plan
    checks at every step.)"""
    if hidden.dtype not in (torch.float32, torch.bfloat16):
        return None
    lib = int4_native.library()
    if lib is None or not int4_native.fast():
        return None
    attn0 = layers[0][1]
    eps = layers[0][10].variance_epsilon
    if cos.shape[-1] != attn0.head_dim or attn0.head_dim % 2 or attn0.head_dim > 512:
        return None
    weights = []
    for (_, attn, q, k, v, o, mlp, gate, up, down, norm1, norm2), (qkv_fn, o_fn, gu_fn, down_fn) in zip(layers, kernels):
        if mlp.act_fn is not ACTIVATIONS["silu"] or norm1.variance_epsilon != eps or norm2.variance_epsilon != eps:
            return None
        if (attn.num_heads, attn.num_key_value_heads, attn.head_dim, attn.scaling) != (
                attn0.num_heads, attn0.num_key_value_heads, attn0.head_dim, attn0.scaling):
            return None
        if norm1.weight.dtype != hidden.dtype or norm2.weight.dtype != hidden.dtype:
            return None
        found = [_weight(parts, fn, hidden.dtype) for parts, fn in
                 (((q, k, v), qkv_fn), ((o,), o_fn), ((gate, up), gu_fn), ((down,), down_fn))]
        if any(f is None for f in found):
            return None
        weights.append(found)
    return NativeStep(lib, layers, weights, hidden.dtype)
