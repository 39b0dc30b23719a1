"""Decode steps of 4-bit Llama models in one native call (``of_llama_step`` in ``int4_native.c``).

With every projection of every layer on the native int4 kernel, a decode step of one sequence spends
more time in Python and in several hundred small PyTorch operators than in the products. The decode
plan (``decode.py``) then hands the whole stack of layers to ``of_llama_step``: one call per step runs
the norms, products, rotary embedding, attention over the cache (written in place through
``DynamicCache.reserve``) and residuals, with the activations rounded to bfloat16 wherever the PyTorch
operators round them. :func:`native_step` says when it applies; anything else keeps the plan's PyTorch
path.
"""
from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import nn

from openformers.modules.cache import DynamicCache
from openformers.modules.mlp import ACTIVATIONS
from openformers.quantization.int4_native import Int4Weight


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

    def __init__(self, lib: ctypes.CDLL, layers: list[tuple[nn.Module, ...]], kernels: list[tuple], dtype: torch.dtype) -> None:
        attn0 = layers[0][1]
        mlp0 = layers[0][6]
        self.lib = lib
        self.count = len(layers)
        self.array = (_Layer * self.count)()
        self.keep: list[Any] = []  # the tensors the structures point into
        for i, ((_, _, _, _, _, o, _, _, _, down, norm1, norm2), (qkv_fn, _, gu_fn, _)) in enumerate(zip(layers, kernels)):
            entry = self.array[i]
            entry.norm1, entry.norm2 = norm1.weight.data_ptr(), norm2.weight.data_ptr()
            for name, native in (("qkv", qkv_fn.native), ("o", o._native()), ("gate_up", gu_fn.native), ("down", down._native())):
                setattr(entry, name, native.struct)
                self.keep.append(native)
            self.keep += [norm1.weight, norm2.weight]
        self.model = _Model(self.count, layers[0][10].weight.shape[0],
                             attn0.num_heads, attn0.num_key_value_heads, attn0.head_dim, mlp0.gate_proj.out_features,
                             float(layers[0][10].variance_epsilon), float(attn0.scaling), int(dtype == torch.bfloat16),
                             self.array)
        self.ref = ctypes.byref(self.model)
        self.caches: list[Any] = [None] * self.count  # the (key, value) buffers the structures point into

    def __call__(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        n, buffers = cache.reserve_all(1)
        for i, bufs in enumerate(buffers):
            if self.caches[i] is not bufs:  # a new buffer (the cache grew or was replaced): point at it
                entry = self.array[i]
                entry.k_cache, entry.v_cache, entry.capacity = bufs[0].data_ptr(), bufs[1].data_ptr(), bufs[0].shape[-2]
                self.caches[i] = bufs
        out = hidden.clone(memory_format=torch.contiguous_format)
        cos32 = cos.reshape(-1).float().contiguous()
        sin32 = sin.reshape(-1).float().contiguous()
        if self.lib.of_llama_step(self.ref, out.data_ptr(), cos32.data_ptr(), sin32.data_ptr(), n, torch.get_num_threads()) != 0:
            raise MemoryError("the native decode step could not allocate its scratch memory")
        cache.advance_all(1)
        return out


def native_step(layers: list[tuple[nn.Module, ...]], kernels: list[tuple], hidden: torch.Tensor, cos: torch.Tensor,
                masks: list, cache: Any) -> NativeStep | None:
    """A :class:`NativeStep` for these resolved layers, or None when the step must run in PyTorch: more than
    one sequence, masks (padding, sliding windows), a cache other than ``DynamicCache``, a projection not on
    the native kernel or with a bias, an activation other than SiLU, partial rotary embeddings, norms or
    weights in another dtype than the activations."""
    if (hidden.shape[0] != 1 or hidden.dtype not in (torch.float32, torch.bfloat16) or type(cache) is not DynamicCache
            or any(m is not None for m in masks)):
        return None
    from openformers.quantization import int4_native

    lib = int4_native.library()
    if lib is None or not int4_native.fast():
        return None
    attn0 = layers[0][1]
    eps = layers[0][10].variance_epsilon
    if cos.shape[-1] != attn0.head_dim or attn0.head_dim % 2 or attn0.head_dim > 512:
        return None
    for (_, attn, _, _, _, o, mlp, _, _, down, norm1, norm2), (qkv_fn, _, gu_fn, _) in zip(layers, kernels):
        if (getattr(qkv_fn, "native", None) is None or getattr(gu_fn, "native", None) is None or qkv_fn.bias is not None
                or gu_fn.bias is not None):
            return None
        if not all(hasattr(m, "_native") and m.bias is None and m._native() is not None for m in (o, down)):
            return None
        if mlp.act_fn is not ACTIVATIONS["silu"] or norm1.variance_epsilon != eps or norm2.variance_epsilon != eps:
            return None
        if (attn.num_heads, attn.num_key_value_heads, attn.head_dim, attn.scaling) != (
                attn0.num_heads, attn0.num_key_value_heads, attn0.head_dim, attn0.scaling):
            return None
        if norm1.weight.dtype != hidden.dtype or norm2.weight.dtype != hidden.dtype:
            return None
    return NativeStep(lib, layers, kernels, hidden.dtype)
