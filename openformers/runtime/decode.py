"""Decode steps of the Llama family without the per-module overhead.

A decode step of SmolLM2-135M on 2 CPU cores is ~120 matrix products and a few hundred small
operators. Between them the module path spends ~6 ms of a 28 ms bf16 step in Python: module calls,
and for every product the checks that choose its kernel and find its fused or packed weight
(``fused.py``). At inference, for steps of one new position per sequence, ``LlamaModel``
runs its layers through a :class:`DecodePlan` instead: those choices are made once per dtype and
batch size and kept as callables, and each step first checks that they still hold (the same
modules, without hooks, patched ``forward`` methods or training mode, and the same parameter and
buffer tensors, not updated in place). Anything else (a new adapter, a hook, a weight loaded
into) makes the step build a new plan or, when one cannot be made, take the module path.

The arithmetic is the module path's, operator for operator, on the same kernels and weights, so
the hidden states are bitwise equal (``tests/models/test_llama_decode_plan.py``).
"""
from __future__ import annotations

import logging
import weakref
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_globals

from openformers.modules.attention import get_attention_backend
from openformers.runtime.native_step import native_step
from openformers.modules.cache import Cache, DynamicCache
from openformers.runtime.fused import Kernel, fusable, fused_kernel, project_kernel
from openformers.modules.mlp import GatedMLP
from openformers.modules.norms import RMSNorm
from openformers.runtime.packed_weights import tensor_version
from openformers.modules.rotary import apply_rotary_heads

logger = logging.getLogger(__name__)

# model -> its plan; nothing is stored on the model
_PLANS: "weakref.WeakKeyDictionary[nn.Module, DecodePlan]" = weakref.WeakKeyDictionary()


def _global_hooks() -> bool:
    return bool(_module_globals._global_forward_hooks or _module_globals._global_forward_pre_hooks
                or getattr(_module_globals, "_global_forward_hooks_always_called", None))


def _layer_modules(layer: nn.Module) -> tuple[nn.Module, ...] | None:
    """(layer, attention, q, k, v, o, mlp, gate, up, down, input norm, post-attention norm), read through
    ``_modules``; None when the layer is not laid out as a Llama layer."""
    get = layer._modules.get
    attn, mlp = get("self_attn"), get("mlp")
    if attn is None or mlp is None:
        return None
    a, m = attn._modules.get, mlp._modules.get
    mods = (layer, attn, a("q_proj"), a("k_proj"), a("v_proj"), a("o_proj"), mlp, m("gate_proj"), m("up_proj"),
            m("down_proj"), get("input_layernorm"), get("post_attention_layernorm"))
    return None if any(x is None for x in mods) else mods


def _runs_as_itself(m: nn.Module) -> bool:
    """No forward hooks, no patched ``forward``, not training: calling ``type(m).forward`` is ``m(...)``."""
    return not (m._forward_hooks or m._forward_pre_hooks or m.training or "forward" in m.__dict__)


def _stamps(tensors: tuple[torch.Tensor, ...]) -> tuple:
    return tuple((t.data_ptr(), tensor_version(t)) for t in tensors)


class DecodePlan:
    """The layers of one ``LlamaModel`` with their products resolved (see the module docstring)."""

    def __init__(self, model: nn.Module, layers: list[tuple[nn.Module, ...]]) -> None:
        self.model = weakref.ref(model)
        self.layers = layers
        self.modules = tuple(m for mods in layers for m in mods)
        self.kernels: dict[tuple, list[tuple[Kernel, Kernel, Kernel, Kernel]]] = {}
        self.native: dict[tuple, Any] = {}  # kernels key -> NativeStep or None (native_step.py)
        self.tensors: tuple[torch.Tensor, ...] = ()
        self.stamps: tuple = ()

    def _sources(self) -> tuple[torch.Tensor, ...]:
        # every tensor a kept kernel may hold: the projections' parameters and buffers
        out = []
        for mods in self.layers:
            for m in mods[2:6] + mods[7:10]:
                out.extend(t for t in m._parameters.values() if t is not None)
                out.extend(t for t in m._buffers.values() if t is not None)
        return tuple(out)

    def valid(self, model: nn.Module) -> bool:
        """The same modules in the same places, each running as itself, the same tensors (global hooks
        are :func:`decode_plan`'s check)."""
        if self.model() is not model:
            return False
        live = model.layers._modules
        if len(live) != len(self.layers):
            return False
        if any(_layer_modules(layer) != mods for layer, mods in zip(live.values(), self.layers)):
            return False
        for m in self.modules:  # _runs_as_itself, inlined: ~360 modules a step
            if m._forward_hooks or m._forward_pre_hooks or m.training or "forward" in m.__dict__:
                return False
        tensors = self._sources()  # the same tensor objects (a replaced weight is a new one), not updated in place
        if len(tensors) != len(self.tensors) or any(a is not b for a, b in zip(tensors, self.tensors)):
            return False
        return _stamps(tensors) == self.stamps

    def _resolve(self, hidden: torch.Tensor, key: tuple) -> list[tuple[Kernel, Kernel, Kernel, Kernel]]:
        kernels = self.kernels.get(key)
        if kernels is None:
            kernels = []
            for layer, attn, q, k, v, o, mlp, gate, up, down, _, _ in self.layers:
                inner = torch.empty(*hidden.shape[:-1], attn.num_heads * attn.head_dim, dtype=hidden.dtype)
                act = torch.empty(*hidden.shape[:-1], gate.out_features, dtype=hidden.dtype)
                kernels.append((
                    fused_kernel(attn, "_fused_qkv", (q, k, v), hidden),
                    project_kernel(o, inner) if type(o) is nn.Linear else o,
                    fused_kernel(mlp, "_fused_gate_up", (gate, up), hidden),
                    project_kernel(down, act) if type(down) is nn.Linear else down,
                ))
            # stamp the tensors the kernels were made from; kernels of other keys made from older tensors go
            tensors = self._sources()
            stamps = _stamps(tensors)
            if stamps != self.stamps:
                self.kernels.clear()
                self.native.clear()
            self.kernels[key] = kernels
            self.tensors, self.stamps = tensors, stamps
        return kernels

    def __call__(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, masks: list[torch.Tensor | None],
                 cache: Cache) -> torch.Tensor:
        """The layers' output for ``hidden`` [b, 1, hidden_size]; the same operators as
        ``LlamaDecoderLayer.forward`` with the fused q/k/v of ``LlamaAttention.forward`` and the fused
        gate/up of ``GatedMLP.forward``."""
        key = (hidden.dtype, hidden.shape[0], torch.get_num_threads())
        kernels = self._resolve(hidden, key)
        # one native call for all layers (native_step.py): sequences at one position, in a DynamicCache
        if type(cache) is DynamicCache and len(cache) == len(self.layers) and all(m is None for m in masks):
            if key not in self.native:
                self.native[key] = native_step(self.layers, kernels, hidden, cos)
            step = self.native[key]
            out = step(hidden, cos, sin, cache) if step is not None else None
            if out is not None:
                return out
        b = hidden.shape[0]
        for (layer, attn, _, _, _, _, mlp, gate, up, _, norm1, norm2), (qkv_fn, o_fn, gu_fn, down_fn), mask in zip(
                self.layers, kernels, masks):
            h, kv, d = attn.num_heads, attn.num_key_value_heads, attn.head_dim
            qkv = qkv_fn(RMSNorm.forward(norm1, hidden)).view(b, 1, h + 2 * kv, d)
            qk = apply_rotary_heads(qkv[:, :, : h + kv], cos, sin)
            q, k = qk[:, :, :h].transpose(1, 2), qk[:, :, h:].transpose(1, 2)
            v = qkv[:, :, h + kv:].transpose(1, 2)
            k, v = cache.update(attn.layer_idx, k, v)
            backend = get_attention_backend(attn.config.attn_implementation)
            out, _ = backend(q, k, v, mask, attn.scaling, 0.0, is_causal=mask is None, output_attentions=False,
                             training=False)
            hidden = hidden + o_fn(out.reshape(b, 1, -1))
            g, u = gu_fn(RMSNorm.forward(norm2, hidden)).split([gate.out_features, up.out_features], dim=-1)
            hidden = hidden + down_fn(mlp.act_fn(g) * u)
        return hidden


# (layer, attention, mlp, input norm, post-attention norm) forwards whose arithmetic DecodePlan.__call__ repeats,
# registered by the model files that define them (the runtime imports no model)
_LAYOUTS: set[tuple] = set()


def register_layer(layer: type[nn.Module], attention: type[nn.Module], mlp: type[nn.Module] = GatedMLP,
                   norm: type[nn.Module] = RMSNorm) -> None:
    """Declare that decoder layers of class ``layer`` (with ``self_attn`` of class ``attention``, ``mlp`` of class
    ``mlp`` and two ``norm`` norms) compute a pre-norm Llama layer: RMSNorm, q/k/v products, rotary embedding over
    q and k, cached attention, output product and residual, RMSNorm, gated MLP and residual."""
    _LAYOUTS.add((layer.forward, attention.forward, mlp.forward, norm.forward, norm.forward))


def _build(model: nn.Module) -> DecodePlan | None:
    layers = []
    for layer in model.layers._modules.values():
        mods = _layer_modules(layer)
        if mods is None:
            return None
        found = (type(mods[0]).forward, type(mods[1]).forward, type(mods[6]).forward, type(mods[10]).forward,
                 type(mods[11]).forward)
        if found not in _LAYOUTS:
            logger.debug("decode plan: %s is not a registered Llama-like layer; the module path runs",
                         type(mods[0]).__name__)
            return None
        # the module path fuses q/k/v and gate/up (plain or 4-bit layers, no hooks); o and down run as
        # themselves unless plain
        if not fusable(*mods[2:5]) or not fusable(*mods[7:9]):
            return None
        layers.append(mods)
    plan = DecodePlan(model, layers)
    return plan if all(_runs_as_itself(m) for m in plan.modules) else None


def decode_plan(model: nn.Module, hidden: torch.Tensor, cache: Any) -> DecodePlan | None:
    """The plan for a decode step of ``model`` (a ``LlamaModel``), or None when this step must take the
    module path: autograd recording, training, not the CPU, no cache, more than one new position a
    sequence, ``torch.compile`` tracing (it traces the module path), or layers that are not plain Llama
    layers."""
    if (torch.is_grad_enabled() or model.training or hidden.shape[1] != 1 or hidden.device.type != "cpu"
            or not isinstance(cache, Cache) or _global_hooks() or torch.compiler.is_compiling()):
        return None
    plan = _PLANS.get(model)
    if plan is not None and plan.valid(model):
        return plan
    _PLANS.pop(model, None)  # drop what an outdated plan holds before building again
    plan = _build(model)
    if plan is not None:
        _PLANS[model] = plan
    return plan


def plan_of(model: nn.Module) -> DecodePlan | None:
    """The plan kept for ``model`` (a ``LlamaModel``), if any (for tests and diagnostics)."""
    return _PLANS.get(model)
