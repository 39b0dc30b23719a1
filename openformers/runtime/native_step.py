"""Decode steps of Llama models in one native call (``of_llama_step`` in ``int4_native.c``).

A decode step of one sequence on a few CPU cores spends as much time in Python and in several hundred
small PyTorch operators as in reading the weights. Where every projection is either on the native 4-bit
kernel (a 4-bit layer, ``int4_native.is_int4``) or a plain row-major weight in the activations' dtype
(float32 or bfloat16; q/k/v and gate/up are read where each parameter lies), the decode plan (``decode.py``) hands the whole stack of layers to
``of_llama_step``: one call per step runs the norms, products, rotary embedding, attention over the
cache (written in place through ``DynamicCache.reserve_all``) and residuals, with the activations
rounded to bfloat16 wherever PyTorch's bfloat16 operators round them. :func:`native_step` says when it
applies; anything else keeps the plan's PyTorch path.

A cache whose sequences sit at positions of their own (the serving engine's slot cache: one row of fixed
buffers per sequence, each row at its own length) runs through :meth:`NativeStep.rows` and
``of_llama_step_rows``: each sequence's rotary values, new key and value position and attention length are
its own, read from the rows and lengths the cache names (``native_rows`` in ``decode.py``).
"""
from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

import torch
from torch import nn

from openformers.modules.cache import DynamicCache
from openformers.modules.dense import is_plain_linear
from openformers.modules.mlp import ACTIVATIONS
from openformers.modules.norms import OffsetRMSNorm, RMSNorm
from openformers.runtime import int4_native
from openformers.runtime.int4_native import Int4Weight, is_int4


logger = logging.getLogger(__name__)
_LAYOUT_CHECKED: dict[Any, str | None] = {}  # library -> layout_mismatch's answer


class _Layer(ctypes.Structure):
    """``of_llama_layer``."""

    _fields_ = [("norm1", ctypes.c_void_p), ("norm2", ctypes.c_void_p), ("qkv", Int4Weight), ("o", Int4Weight),
                ("gate_up", Int4Weight), ("down", Int4Weight), ("k_cache", ctypes.c_void_p), ("v_cache", ctypes.c_void_p),
                ("capacity", ctypes.c_int64), ("q_norm", ctypes.c_void_p), ("k_norm", ctypes.c_void_p),
                ("qkv_bias", ctypes.c_void_p), ("o_bias", ctypes.c_void_p), ("gate_up_bias", ctypes.c_void_p),
                ("down_bias", ctypes.c_void_p), ("norm1_bias", ctypes.c_void_p), ("norm2_bias", ctypes.c_void_p)]


class _Model(ctypes.Structure):
    """``of_llama``."""

    _fields_ = [("layers", ctypes.c_int64), ("hidden", ctypes.c_int64), ("heads", ctypes.c_int64),
                ("kv_heads", ctypes.c_int64), ("head_dim", ctypes.c_int64), ("inter", ctypes.c_int64),
                ("eps", ctypes.c_float), ("scaling", ctypes.c_float), ("bf16", ctypes.c_int),
                ("norm_mode", ctypes.c_int), ("act", ctypes.c_int), ("layer", ctypes.POINTER(_Layer)),
                ("mlp", ctypes.c_int)]


# of_llama.act for the gated MLP's activation function (modules/mlp.py's table: one function per kind)
_ACTS = {ACTIVATIONS["silu"]: 0, ACTIVATIONS["gelu_pytorch_tanh"]: 1}


def layout_mismatch(lib: ctypes.CDLL) -> str | None:
    """None when the ctypes views of ``of_llama_layer`` and ``of_llama`` have the C side's sizes and offsets
    (``of_step_layout``); else what differs (the step is then not used)."""
    want = (ctypes.sizeof(_Layer), _Layer.capacity.offset, _Layer.q_norm.offset, ctypes.sizeof(_Model),
            _Model.layer.offset, _Model.norm_mode.offset, _Model.act.offset, _Layer.qkv_bias.offset,
            _Layer.norm1_bias.offset, _Model.mlp.offset)
    layout = getattr(lib, "of_step_layout", None)
    if layout is None:
        return "the library has no of_step_layout"
    layout.restype, layout.argtypes = ctypes.c_int64, [ctypes.c_int]
    got = tuple(int(layout(i)) for i in range(len(want)))
    return None if want == got else f"of_llama_layer/of_llama: ctypes {want} != C {got}"


def _struct_error(name: str, w: Int4Weight, held: Any, out: int, in_: int, dtype: torch.dtype) -> str | None:
    """What is wrong with one projection's ``of_int4_weight`` (and ``held``, what it points into) for a
    ``[out, in_]`` product in ``dtype``, or None."""
    if (w.out, w.in_) != (out, in_):
        return f"{name} is [{w.out}, {w.in_}], the model's sizes need [{out}, {in_}]"
    if w.q:  # 4-bit: tiles of 4 rows, pairs of 32-value groups
        if w.out % 4 or w.in_ % 64:
            return f"{name} (4-bit) is [{w.out}, {w.in_}]: rows must be a multiple of 4 and columns of 64"
        if not isinstance(held, int4_native.NativeInt4) or (held.out_features, held.in_features) != (out, in_) \
                or w.q != held.q.data_ptr() or w.sz != held.sz.data_ptr():
            return f"{name} (4-bit) does not point into the kernel it holds"
        return None
    parts = held if isinstance(held, (list, tuple)) else ()
    if not 1 <= len(parts) <= 3 or any(
            not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != in_ or t.dtype != dtype
            or not t.is_contiguous() or t.device.type != "cpu" for t in parts):
        return f"{name} (plain) holds {[tuple(getattr(t, 'shape', ())) for t in parts]}; 1 to 3 contiguous " \
               f"[rows, {in_}] {dtype} CPU weights wanted"
    ends = [sum(t.shape[0] for t in parts[: i + 1]) for i in range(len(parts))] + [out] * (3 - len(parts))
    ptrs = [t.data_ptr() for t in parts] + [None] * (3 - len(parts))
    if ends[2] != out or (w.split1, w.split2) != tuple(ends[:2]) or [w.dense, w.dense1, w.dense2] != ptrs:
        return f"{name} (plain) has splits {w.split1}, {w.split2} of {w.out} rows where its weights end at {ends}"
    if (not w.dense or not 0 <= w.split1 <= w.split2 <= w.out or (w.split1 % 4 and w.split1 != w.out)
          or (w.split2 % 4 and w.split2 != w.out)):
        return f"{name} (plain) has splits {w.split1}, {w.split2} of {w.out} rows (multiples of 4 wanted)"
    return None


def check_layers(layers: list[tuple[nn.Module, ...]], weights: list[list[tuple]], dtype: torch.dtype) -> str | None:
    """None when every layer's projections, norms and sizes are what ``of_llama_step`` reads for the model-level
    sizes (taken from layer 0, as the kernel applies them to every layer); else what differs, naming the layer
    and the tensor. Run once per plan (the weights do not change between steps)."""
    if not layers or len(layers) != len(weights):
        return f"{len(layers)} layers and {len(weights)} weight sets"
    attn0, norm0 = layers[0][1], layers[0][10]
    hidden, h, kv, d = norm0.weight.shape[0], attn0.num_heads, attn0.num_key_value_heads, attn0.head_dim
    inter = layers[0][8].out_features
    plain = layers[0][7] is None  # a plain MLP: c_fc in up's place, no gate
    if min(hidden, h, kv, d, inter) < 1 or h % kv or d % 2:
        return f"hidden {hidden}, heads {h}, kv heads {kv}, head dim {d}, intermediate {inter}"
    for i, (mods, found) in enumerate(zip(layers, weights)):
        attn, gate, up = mods[1], mods[7], mods[8]
        if (attn.num_heads, attn.num_key_value_heads, attn.head_dim) != (h, kv, d):
            return f"layer {i}: heads {attn.num_heads}, kv heads {attn.num_key_value_heads}, head dim {attn.head_dim} " \
                   f"where layer 0 has {h}, {kv}, {d}"
        if (gate is None) != plain or up.out_features != inter or (gate is not None and gate.out_features != inter):
            return f"layer {i}: intermediate size {getattr(gate, 'out_features', None)}/{up.out_features} " \
                   f"where layer 0 has {inter} ({'no gate' if plain else 'a gate'})"
        if (mods[12] is None) != (mods[13] is None):
            return f"layer {i}: a q_norm without a k_norm or the other way round"
        for norm_name, norm, size in (("input_layernorm", mods[10], hidden), ("post_attention_layernorm", mods[11], hidden),
                                      ("self_attn.q_norm", mods[12], d), ("self_attn.k_norm", mods[13], d)):
            if norm is None:
                continue
            for part in ("weight", "bias") if isinstance(norm, nn.LayerNorm) else ("weight",):
                wt = getattr(norm, part)
                if (wt is None or tuple(wt.shape) != (size,) or wt.dtype != dtype or not wt.is_contiguous()
                        or wt.device.type != "cpu"):
                    found_as = "missing" if wt is None else \
                        f"{tuple(wt.shape)} {wt.dtype} (contiguous: {wt.is_contiguous()})"
                    return f"layer {i} {norm_name}.{part} is {found_as}; [{size}] contiguous {dtype} wanted"
        if len(found) != 4:
            return f"layer {i}: {len(found)} projections, 4 wanted"
        for (name, out, in_), (struct, held) in zip(
                (("qkv", (h + 2 * kv) * d, hidden), ("o", hidden, h * d), ("gate_up", (1 if plain else 2) * inter, hidden),
                 ("down", hidden, inter)), found):
            err = _struct_error(name, struct, held, out, in_, dtype)
            if err is not None:
                return f"layer {i} {err}"
    return None


class NativeStep:
    """The layers of one model as ``of_llama_step``'s structures (weights held, cache pointers per step).

    Every layer's sizes are checked against the model-level sizes when it is built (:func:`check_layers`;
    a ValueError names the layer and tensor); each call checks what can change between steps (the hidden
    states, cos and sin, and the cache buffers' shape, dtype, layout and room)."""

    def __init__(self, lib: ctypes.CDLL, layers: list[tuple[nn.Module, ...]], weights: list[list[tuple]],
                 dtype: torch.dtype) -> None:
        err = check_layers(layers, weights, dtype)
        if err is not None:
            raise ValueError(f"of_llama_step: {err}")
        attn0, norm0 = layers[0][1], layers[0][10]
        modes = {_norm_mode(n) for mods in layers for n in mods[10:] if n is not None}
        if len(modes) != 1 or None in modes:
            raise ValueError(f"of_llama_step: the norms are not all plain or all offset RMSNorms or all LayerNorms ({modes})")
        acts = {_ACTS.get(mods[6].act_fn) for mods in layers}
        if len(acts) != 1 or None in acts:
            raise ValueError("of_llama_step: the layers' MLP activations are not all SiLU or all tanh-GELU")
        self.dtype = dtype
        self.lib = lib
        self.count = len(layers)
        self.array = (_Layer * self.count)()
        self.keep: list[Any] = []  # the tensors the structures point into
        (mode,) = modes

        def norm_weight(norm: nn.Module) -> int:
            # mode 1: a float32 copy of offset + weight, made here (the plan makes a new step when the weight changes)
            w = norm.weight
            if mode == 1:
                with torch.no_grad():
                    w = (norm.offset + w.detach().float()).contiguous()
            self.keep.append(w)
            return w.data_ptr()

        def bias(name: str, parts: tuple[nn.Module | None, ...], out: int) -> int | None:
            # a float32 copy of the product's biases (one after the other) as the activation dtype holds them;
            # None where the parts have none
            found = [getattr(m, "bias", None) for m in parts if m is not None]
            if all(t is None for t in found):
                return None
            if any(t is None for t in found) or sum(t.numel() for t in found) != out:
                raise ValueError(f"of_llama_step: layer {i} {name}: biases {[getattr(t, 'shape', None) for t in found]} "
                                 f"for a product of {out} rows")
            with torch.no_grad():
                b = torch.cat([t.detach().to(dtype).float().reshape(-1) for t in found]).contiguous()
            self.keep.append(b)
            return b.data_ptr()

        for i, (mods, found) in enumerate(zip(layers, weights)):
            entry = self.array[i]
            for name, norm in (("norm1", mods[10]), ("norm2", mods[11]), ("q_norm", mods[12]), ("k_norm", mods[13])):
                if norm is not None:
                    setattr(entry, name, norm_weight(norm))
            if mode == 2:  # LayerNorms' biases, read where they lie
                entry.norm1_bias, entry.norm2_bias = mods[10].bias.data_ptr(), mods[11].bias.data_ptr()
            for name, (struct, held) in zip(("qkv", "o", "gate_up", "down"), found):
                setattr(entry, name, struct)
                self.keep.append(held)
            for name, parts, (struct, _) in zip(("qkv_bias", "o_bias", "gate_up_bias", "down_bias"),
                                                (mods[2:5], mods[5:6], mods[7:9], mods[9:10]), found):
                setattr(entry, name, bias(name, parts, struct.out))
        self.model = _Model(self.count, norm0.weight.shape[0], attn0.num_heads, attn0.num_key_value_heads, attn0.head_dim,
                            layers[0][8].out_features, float(norm0.eps), float(attn0.scaling),
                            int(dtype == torch.bfloat16), mode, acts.pop(), self.array, int(layers[0][7] is None))
        self.ref = ctypes.byref(self.model)
        self.caches: list[Any] = [None] * self.count  # the (key, value) buffers the structures point into
        self.room = 0  # the least capacity of the buffers in self.caches (checked when they change)
        self.batch = -1  # their batch size
        self.lock = threading.Lock()

    def _buffer_error(self, i: int, bufs: Any, b: int) -> str | None:
        """What is wrong with layer ``i``'s (key, value) buffers for ``of_llama_step``, or None."""
        m = self.model
        if len(bufs) != 2:
            return f"layer {i}: {len(bufs)} cache buffers"
        for name, t in zip(("key", "value"), bufs):
            if (t.dim() != 4 or t.shape[0] != b or t.shape[1] != m.kv_heads or t.shape[3] != m.head_dim
                    or t.dtype != self.dtype or not t.is_contiguous() or t.device.type != "cpu"):
                return f"layer {i} {name} cache is {tuple(t.shape)} {t.dtype} (contiguous: {t.is_contiguous()}); " \
                       f"contiguous [{b}, {m.kv_heads}, capacity, {m.head_dim}] {self.dtype} wanted"
        if bufs[0].shape != bufs[1].shape:
            return f"layer {i}: key cache {tuple(bufs[0].shape)} and value cache {tuple(bufs[1].shape)}"
        return None

    def _check_inputs(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> int:
        """The batch size of ``hidden`` [b, 1, hidden_size] with cos and sin [b or 1, 1, head_dim]; a ValueError
        names what is wrong."""
        m = self.model
        if (hidden.dim() != 3 or hidden.shape[1] != 1 or hidden.shape[2] != m.hidden or hidden.dtype != self.dtype
                or hidden.device.type != "cpu"):
            raise ValueError(f"of_llama_step: hidden states {tuple(hidden.shape)} {hidden.dtype}; "
                             f"[batch, 1, {m.hidden}] {self.dtype} wanted")
        b = hidden.shape[0]
        if b < 1 or cos.shape != sin.shape or cos.shape[0] not in (1, b) or cos.numel() != cos.shape[0] * m.head_dim:
            raise ValueError(f"of_llama_step: cos {tuple(cos.shape)} and sin {tuple(sin.shape)} for a batch of {b}; "
                             f"[{b} or 1, 1, {m.head_dim}] each wanted")
        return b

    def _point(self, buffers: list, rows: int) -> bool:
        """Point the layers' structures at ``buffers`` (each layer's (key, value) of ``rows`` cache rows), checking
        a buffer when it is new; False (nothing pointed at) when one has a layout the kernel cannot read. Holds
        ``self.lock``."""
        if len(buffers) != self.count:
            return False
        changed = self.batch != rows
        for i, bufs in enumerate(buffers):
            if self.caches[i] is not bufs:  # a new buffer (the cache grew or was replaced): point at it
                if self._buffer_error(i, bufs, rows) is not None:
                    self.caches[i] = None
                    self.batch = -1
                    return False
                entry = self.array[i]
                entry.k_cache, entry.v_cache, entry.capacity = bufs[0].data_ptr(), bufs[1].data_ptr(), bufs[0].shape[-2]
                self.caches[i] = bufs
                changed = True
        if changed:
            for i, bufs in enumerate(self.caches):
                if self._buffer_error(i, bufs, rows) is not None:
                    self.caches[i] = None
                    self.batch = -1
                    return False
            self.room = min(int(e.capacity) for e in self.array)
            self.batch = rows
        return True

    def __call__(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: DynamicCache) -> torch.Tensor | None:
        """The layers' output for ``hidden`` [b, 1, hidden_size], or None (nothing done) when the sequences are
        not all at one position (``position_ids`` given per row without a mask) or the cache does not hold
        this batch in the activations' dtype, with every layer at one length."""
        b = self._check_inputs(hidden, cos, sin)
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
            if not self._point(buffers, b):  # a layout the kernel cannot read: PyTorch's layers
                return None
            if n < 0 or n + 1 > self.room:
                return None  # no room for the new position (the cache did not grow as reserve_all promises)
            out = hidden.clone(memory_format=torch.contiguous_format)
            cos32 = cos[0].reshape(-1).float().contiguous()  # no padding: every sequence is at the same position
            sin32 = sin[0].reshape(-1).float().contiguous()
            if self.lib.of_llama_step(self.ref, out.data_ptr(), b, cos32.data_ptr(), sin32.data_ptr(), n,
                                      torch.get_num_threads()) != 0:
                raise MemoryError("the native decode step could not allocate its scratch memory")
            cache.advance_all(1)
        return out

    def rows(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, buffers: list,
             slots: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | None:
        """The layers' output for ``hidden`` [b, 1, hidden_size] of sequences at their own positions: sequence
        ``i`` lives in row ``slots[i]`` of every layer's (key, value) buffers ``[rows, kv_heads, capacity,
        head_dim]``, holds ``lengths[i]`` positions there, gets its new key and value at position ``lengths[i]``
        and attends over positions ``[0, lengths[i]]``, rotated by its own row of cos and sin. The buffers are
        written in place; the caller's cache keeps its own lengths. None (nothing done) when the buffers have
        a layout the kernel cannot read, a slot is out of range or taken twice, or a position has no room."""
        b = self._check_inputs(hidden, cos, sin)
        if slots.shape != (b,) or lengths.shape != (b,) or slots.dtype != torch.long or lengths.dtype != torch.long:
            raise ValueError(f"of_llama_step_rows: slots {tuple(slots.shape)} {slots.dtype} and lengths "
                             f"{tuple(lengths.shape)} {lengths.dtype} for a batch of {b}; [{b}] int64 each wanted")
        if not buffers or len(buffers[0]) != 2 or buffers[0][0].dim() != 4:
            return None
        rows = buffers[0][0].shape[0]
        slots, lengths = slots.contiguous(), lengths.contiguous()
        if b > 1 and len(set(slots.tolist())) != b:
            return None  # two sequences in one cache row
        if int(slots.min()) < 0 or int(slots.max()) >= rows or int(lengths.min()) < 0:
            return None
        d = self.model.head_dim
        cos32 = cos.reshape(-1, d).float().expand(b, d).contiguous()
        sin32 = sin.reshape(-1, d).float().expand(b, d).contiguous()
        with self.lock:
            if not self._point(buffers, rows) or int(lengths.max()) + 1 > self.room:
                return None
            out = hidden.clone(memory_format=torch.contiguous_format)
            if self.lib.of_llama_step_rows(self.ref, out.data_ptr(), b, cos32.data_ptr(), sin32.data_ptr(),
                                           slots.data_ptr(), lengths.data_ptr(), torch.get_num_threads()) != 0:
                raise MemoryError("the native decode step could not allocate its scratch memory")
        return out


def _weight(parts: tuple[nn.Module, ...], kernel: Any, dtype: torch.dtype) -> tuple[Int4Weight, Any] | None:
    """The ``of_int4_weight`` of a product of ``parts`` (their outputs one after the other): the native 4-bit
    kernel's (``kernel.native`` of a fused kernel, or a lone 4-bit layer's), or up to three plain row-major
    weights in the activation dtype read where they lie (each part's rows a multiple of 4, but the last);
    None otherwise. Biases are the step's own (float32 copies, :class:`NativeStep`). Returns the structure and what
    it points into."""
    native = getattr(kernel, "native", None)
    if native is not None:
        return native.struct, native
    if len(parts) == 1 and is_int4(parts[0]):
        native = int4_native.layer_kernel(parts[0])
        return None if native is None else (native.struct, native)
    if len(parts) > 3:
        return None
    weights = []
    for m in parts:
        if not is_plain_linear(m):
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


def _norm_mode(norm: nn.Module) -> int | None:
    """``of_llama.norm_mode`` for a norm module: 0 for an RMSNorm, 1 for an OffsetRMSNorm, 2 for a LayerNorm with a
    weight and a bias over one dimension, None for another."""
    forward = type(norm).forward
    if forward is nn.LayerNorm.forward:
        shape = getattr(norm, "normalized_shape", ())
        return 2 if len(shape) == 1 and norm.weight is not None and norm.bias is not None else None
    return 0 if forward is RMSNorm.forward else 1 if forward is OffsetRMSNorm.forward else None


def native_step(layers: list[tuple[nn.Module, ...]], kernels: list[tuple], hidden: torch.Tensor,
                cos: torch.Tensor) -> NativeStep | None:
    """A :class:`NativeStep` for these resolved layers, or None when they must run in PyTorch: activations
    other than float32 or bfloat16, a projection neither on the native 4-bit kernel nor a
    plain row-major weight in the activations' dtype, an activation other than SiLU or tanh-GELU, partial rotary
    embeddings, norms in another dtype or not all plain or all offset RMSNorms or all LayerNorms (with weights and biases).
    (What changes from step to step,
    masks and the cache, the plan checks at every step.)"""
    if hidden.dtype not in (torch.float32, torch.bfloat16):
        return None
    lib = int4_native.library()
    if lib is None or not int4_native.fast():
        return None
    if lib not in _LAYOUT_CHECKED:
        _LAYOUT_CHECKED[lib] = layout_mismatch(lib)
        if _LAYOUT_CHECKED[lib] is not None:
            logger.warning("native decode step not used: %s (a stale build? remove the native cache)", _LAYOUT_CHECKED[lib])
    if _LAYOUT_CHECKED[lib] is not None:
        return None
    attn0 = layers[0][1]
    eps = layers[0][10].eps
    if cos.shape[-1] != attn0.head_dim or attn0.head_dim % 2 or attn0.head_dim > 512:
        return None
    if len(layers) != len(kernels) or not layers:
        return None
    weights = []
    for (_, attn, q, k, v, o, mlp, gate, up, down, norm1, norm2, *qk_norms), (qkv_fn, o_fn, gu_fn, down_fn) in zip(
            layers, kernels):
        if any(n is not None and (n.weight.dtype != hidden.dtype or n.eps != eps) for n in qk_norms):
            return None
        if mlp.act_fn not in _ACTS or norm1.eps != eps or norm2.eps != eps:
            return None
        if mlp.act_fn is not layers[0][6].act_fn:
            return None
        norms = [n for n in (norm1, norm2, *qk_norms) if n is not None]
        if any(_norm_mode(n) is None or _norm_mode(n) != _norm_mode(layers[0][10]) for n in norms):
            return None
        if (attn.num_heads, attn.num_key_value_heads, attn.head_dim, attn.scaling) != (
                attn0.num_heads, attn0.num_key_value_heads, attn0.head_dim, attn0.scaling):
            return None
        if norm1.weight.dtype != hidden.dtype or norm2.weight.dtype != hidden.dtype:
            return None
        products = ((q, k, v), (o,), (up,) if gate is None else (gate, up), (down,))
        if any(len({getattr(m, "bias", None) is None for m in parts}) > 1 for parts in products):
            return None  # a product whose parts have biases and parts have none: PyTorch's layers
        found = [_weight(parts, fn, hidden.dtype) for parts, fn in zip(products, (qkv_fn, o_fn, gu_fn, down_fn))]
        if any(f is None for f in found):
            return None
        weights.append(found)
    if check_layers(layers, weights, hidden.dtype) is not None:  # layers of different sizes: PyTorch's layers
        return None
    return NativeStep(lib, layers, weights, hidden.dtype)
