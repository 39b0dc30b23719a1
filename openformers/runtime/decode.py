"""The layers of a described decoder stack on the runtime's kernels, prefill and decode steps alike.

A family describes its layer from known blocks (``modules/blocks.py``: RMSNorm with or without a weight
offset or LayerNorm, rotary attention with optional per-head q/k norms and projection biases, gated or plain
MLP, scaled embeddings, which the stack's ``layer_inputs`` applies); :func:`plan_for` reads that description
and the model's modules into a :class:`DecodePlan`, or says (one debug log line) why it cannot.

A decode step of SmolLM2-135M on 2 CPU cores is ~120 matrix products and a few hundred small
operators; module calls and per-product kernel choices cost ~6 ms of a 28 ms bf16 step. The plan runs
the layers with q/k/v and gate/up as one product each on the copies of ``fused.py``, and for steps of
one new position per sequence keeps those choices, once per dtype, batch size and thread count, as
callables; before each step it checks that they still hold (the same modules, without hooks, patched
``forward`` methods or training mode, and the same parameter and buffer tensors, not updated in
place). Anything else (a new adapter, a hook, a weight loaded into) builds a new plan or, when one
cannot be made, lets the model's own ``forward`` run. Where every projection can be read by the native
kernel, a decode step is one native call (``native_step.py``): for a ``DynamicCache`` with every sequence at
one position, and for a cache of fixed rows with a length per sequence that offers ``native_rows()``
(``serving/cache.py``'s ``SlotCache``; see :func:`_rows_of`).

A LoRA-wrapped projection runs as a plain ``nn.Linear`` over a merged copy of its weight that the runtime
keeps (``adapters.py``); the plan also checks, at every call, the adapters' state (active, merged,
disabled, scalings) and their A and B weights, so an optimizer step on the adapter makes the copies again
before the next step (``tests/runtime/test_lora_plan.py``). Other adapter kinds, DoRA and adapters over
quantized layers run as modules, with a debug line saying why.

A step through kept kernels gives the bits of the same step with kernels resolved afresh
(``tests/runtime/test_decode_plan.py``); against the module path (plain ``nn.Linear`` products) the
values agree to rounding.
"""
from __future__ import annotations

import logging
import weakref
from operator import attrgetter, is_
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_globals

from openformers.modules.attention import get_attention_backend
from openformers.modules.blocks import DecoderBlocks, embedding_scale
from openformers.modules.cache import Cache, DynamicCache
from openformers.modules.dense import is_plain_linear
from openformers.modules.mlp import MLPS
from openformers.modules.norms import OffsetRMSNorm, RMSNorm
from openformers.modules.rotary import apply_rotary_heads
from openformers.runtime import adapters
from openformers.runtime.fused import Kernel, fusable, fused_kernel, project_kernel
from openformers.runtime.describe import _LOGGED, declared, why_not  # noqa: F401 (_LOGGED: tests reset it)
from openformers.runtime.native_step import native_step

logger = logging.getLogger(__name__)

# model -> its plan; nothing is stored on the model
_PLANS: "weakref.WeakKeyDictionary[nn.Module, DecodePlan]" = weakref.WeakKeyDictionary()


def _global_hooks() -> bool:
    return bool(_module_globals._global_forward_hooks or _module_globals._global_forward_pre_hooks
                or getattr(_module_globals, "_global_forward_hooks_always_called", None))


def _layer_modules(layer: nn.Module) -> tuple[nn.Module, ...] | None:
    """(layer, attention, q, k, v, o, mlp, gate, up, down, input norm, post-attention norm, q norm, k norm), read
    through ``_modules`` (the q and k norms None where the layer has none); None when the layer is not laid out
    as a Llama layer. A plain MLP's products stand in the MLP's places as (None, c_fc, c_proj): its one
    product before the activation in ``up``'s place, the one after in ``down``'s."""
    get = layer._modules.get
    attn, mlp = get("self_attn"), get("mlp")
    if attn is None or mlp is None:
        return None
    a, m = attn._modules.get, mlp._modules.get
    plain = m("c_fc") is not None
    products = (None, m("c_fc"), m("c_proj")) if plain else (m("gate_proj"), m("up_proj"), m("down_proj"))
    mods = (layer, attn, a("q_proj"), a("k_proj"), a("v_proj"), a("o_proj"), mlp, *products,
            get("input_layernorm"), get("post_attention_layernorm"))
    if any(x is None for i, x in enumerate(mods) if not (plain and i == 7)):
        return None
    return mods + (a("q_norm"), a("k_norm"))


def _runs_as_itself(m: nn.Module) -> bool:
    """No forward hooks, no patched ``forward``, not training: calling ``type(m).forward`` is ``m(...)``."""
    return not (m._forward_hooks or m._forward_pre_hooks or m.training or "forward" in m.__dict__)


_GET = dict.get
_DATA_PTR = torch.Tensor.data_ptr
_VERSION = attrgetter("_version")
_LAYER_KEYS = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
_ATTN_KEYS = ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")
_MLP_KEYS = ("gate_proj", "up_proj", "down_proj", "c_fc", "c_proj")


class _Sources:
    """What a plan's kernels and merged copies were made from, as flat lists that one compare each checks:

    - ``trail``: every ``(dict, key)`` lookup that reaches the plan's modules and source tensors from the model
      (``model._modules["layers"]``, each layer's and projection's ``_modules``, ``_parameters`` and
      ``_buffers``), with the objects found (compared by identity);
    - ``sized``: the ``_parameters``/``_buffers`` dicts read whole, and ``model.layers._modules``, with their
      lengths (a parameter or layer added);
    - ``tensors``: the source tensors, with their data pointers, and the version counters of those that have one
      (inference tensors have none).

    A module's ``_modules``/``_parameters``/``_buffers`` dicts are taken as the ones ``nn.Module`` made (torch
    never replaces them); what they hold is read afresh at every check."""

    def __init__(self, model: nn.Module, live: list[tuple[nn.Module, ...]],
                 projections: tuple[tuple[nn.Module, bool], ...]) -> None:
        trail: list[tuple[dict, str]] = [(model._modules, "layers")]
        layers = model._modules["layers"]._modules
        self.sized = [layers]
        trail += [(layers, k) for k in layers]
        for mods in live:
            layer, attn, mlp = mods[0], mods[1], mods[6]
            trail += [(layer._modules, k) for k in _LAYER_KEYS]
            trail += [(attn._modules, k) for k in _ATTN_KEYS]
            trail += [(mlp._modules, k) for k in _MLP_KEYS]
        tensors: list[torch.Tensor] = []
        for m, lora in projections:
            if lora:
                tensors += [t for t in adapters.sources(m, trail) if t is not None]
                continue
            for store in (m._parameters, m._buffers):
                self.sized.append(store)
                trail += [(store, k) for k in store]
                tensors += [t for t in store.values() if t is not None]
        self.dicts, self.keys = [d for d, _ in trail], [k for _, k in trail]
        self.objects = list(map(_GET, self.dicts, self.keys))
        self.sizes = list(map(len, self.sized))
        self.tensors = tensors
        self.versioned = [t for t in tensors if not t.is_inference()]
        self.ptrs = list(map(_DATA_PTR, tensors))
        self.versions = list(map(_VERSION, self.versioned))

    def same(self, other: "_Sources | None" = None) -> bool:
        """Whether the lookups still find the same objects and the tensors are not moved or updated in place
        (now, or as recorded in ``other``)."""
        if other is not None:
            return (len(self.objects) == len(other.objects) and all(map(is_, self.objects, other.objects))
                    and self.sizes == other.sizes and self.ptrs == other.ptrs and self.versions == other.versions)
        if not all(map(is_, map(_GET, self.dicts, self.keys), self.objects)):
            return False
        if list(map(len, self.sized)) != self.sizes:
            return False
        try:
            return (list(map(_DATA_PTR, self.tensors)) == self.ptrs
                    and list(map(_VERSION, self.versioned)) == self.versions)
        except RuntimeError:  # a tensor swapped for an inference tensor (torch.utils.swap_tensors) has no version
            return False


class DecodePlan:
    """The layers of one ``LlamaModel`` with their products resolved (see the module docstring).

    ``live`` holds each layer's modules as the model has them (what :meth:`valid` compares), ``layers`` the
    modules the plan runs: the same, but for a LoRA-wrapped projection, whose place holds the runtime's
    stand-in over a merged copy of its weight (``adapters.py``) or its base layer when no adapter applies."""

    def __init__(self, model: nn.Module, layers: list[tuple[nn.Module, ...]],
                 live: list[tuple[nn.Module, ...]] | None = None) -> None:
        self.model = weakref.ref(model)
        self.layers = layers
        self.live = layers if live is None else live
        self.loras = tuple(m for mods in self.live for m in mods[2:6] + mods[7:10]
                           if m is not None and adapters.is_adapter(m))
        lora_ids = {id(m) for m in self.loras}
        self.modules = tuple(m for mods in self.live for m in mods if m is not None and id(m) not in lora_ids) + tuple(
            w for m in self.loras for w in adapters.watched(m))
        self._module_dicts = [m.__dict__ for m in self.modules]
        # (module, whether it is a LoRA layer) for every module whose tensors the plan reads: the projections and
        # the norms (the native step holds their weights' pointers, and float32 copies of offset norms' weights)
        self.projections = tuple((m, id(m) in lora_ids) for mods in self.live
                                 for m in mods[2:6] + mods[7:10] + mods[10:] if m is not None)
        self.adapter_state = [adapters.state(m) for m in self.loras]
        self.kernels: dict[tuple, list[tuple[Kernel, Kernel, Kernel, Kernel]]] = {}
        self.native: dict[tuple, Any] = {}  # kernels key -> NativeStep or None (native_step.py)
        self.sources = self._sources()  # what the plan was made from, checked at every call (valid)

    def _sources(self) -> _Sources:
        # every module the plan runs, found from the model, and every tensor a kept kernel may hold, or a merged
        # copy is made from: the projections' and norms' parameters and buffers, a LoRA layer's base weight and
        # bias and its used adapters' A and B weights
        model = self.model()
        if model is None:
            raise RuntimeError("this decode plan's model is gone; call runtime.decode.plan_for(model) for a new plan")
        return _Sources(model, self.live, self.projections)

    def valid(self, model: nn.Module) -> bool:
        """The same modules in the same places, each running as itself, the same adapter state, the same
        tensors (global hooks are :func:`plan_for`'s check). About 1,200 modules and 700 tensors a step for
        SmolLM2-135M with LoRA on every projection, so each part is one pass over a flat list
        (``benchmarks/bench_plan_valid.py``)."""
        if self.model() is not model:
            return False
        for d in self._module_dicts:  # _runs_as_itself, inlined, on each module's __dict__
            if d["_forward_hooks"] or d["_forward_pre_hooks"] or d["training"] or "forward" in d:
                return False
        # LoRA layers: the same adapters active, merged or disabled, with the same scalings (their tensors below)
        if self.loras and list(map(adapters.live_state, self.loras)) != self.adapter_state:
            return False
        # the same modules and tensor objects (a replaced weight is a new one), not moved or updated in place
        return self.sources.same()

    def kernels_for(self, hidden: torch.Tensor) -> list[tuple[Kernel, Kernel, Kernel, Kernel]]:
        """Each layer's (q/k/v, o, gate/up, down) products for inputs like ``hidden``, resolved now (a plain MLP:
        c_fc alone in gate/up's place, c_proj in down's)."""
        kernels = []
        for layer, attn, q, k, v, o, mlp, gate, up, down, *_ in self.layers:
            inner = torch.empty(*hidden.shape[:-1], attn.num_heads * attn.head_dim, dtype=hidden.dtype)
            act = torch.empty(*hidden.shape[:-1], up.out_features, dtype=hidden.dtype)
            if gate is not None:
                first = fused_kernel(mlp, "_fused_gate_up", (gate, up), hidden)
            else:
                first = project_kernel(up, hidden) if is_plain_linear(up) else up
            kernels.append((
                fused_kernel(attn, "_fused_qkv", (q, k, v), hidden),
                project_kernel(o, inner) if is_plain_linear(o) else o,
                first,
                project_kernel(down, act) if is_plain_linear(down) else down,
            ))
        return kernels

    def _resolve(self, hidden: torch.Tensor, key: tuple) -> list[tuple[Kernel, Kernel, Kernel, Kernel]]:
        kernels = self.kernels.get(key)
        if kernels is None:
            kernels = self.kernels_for(hidden)
            # record the tensors the kernels were made from; kernels of other keys made from older tensors go
            sources = self._sources()
            if not sources.same(self.sources):
                self.kernels.clear()
                self.native.clear()
            self.kernels[key] = kernels
            self.sources = sources
        return kernels

    def __call__(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, masks: list[torch.Tensor | None],
                 cache: Cache | None) -> torch.Tensor:
        """The layers' output for ``hidden`` [b, seq, hidden_size]: a decode step (one position a sequence, a
        cache) on the kernels kept for its dtype, batch and thread count, and in one native call where
        :func:`native_step` allows; anything else (a prefill) on kernels resolved for it."""
        if hidden.shape[1] != 1 or not isinstance(cache, Cache):
            return self.run(hidden, cos, sin, masks, cache, self.kernels_for(hidden))
        key = (hidden.dtype, hidden.shape[0], torch.get_num_threads())
        kernels = self._resolve(hidden, key)
        # one native call for all layers (native_step.py): sequences at one position, in a DynamicCache
        if type(cache) is DynamicCache and len(cache) == len(self.layers) and all(m is None for m in masks):
            step = self._native(key, kernels, hidden, cos)
            out = step(hidden, cos, sin, cache) if step is not None else None
            if out is not None:
                return out
        # or sequences at positions of their own, in a cache of fixed rows (the serving engine's)
        bound = _rows_of(cache, masks, len(self.layers))
        if bound is not None:
            step = self._native(key, kernels, hidden, cos)
            out = step.rows(hidden, cos, sin, *bound) if step is not None else None
            if out is not None:
                return out
        return self.run(hidden, cos, sin, masks, cache, kernels)

    def _native(self, key: tuple, kernels: list, hidden: torch.Tensor, cos: torch.Tensor) -> Any:
        if key not in self.native:
            self.native[key] = native_step(self.layers, kernels, hidden, cos)
        return self.native[key]

    def run(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, masks: list[torch.Tensor | None],
            cache: Cache | None, kernels: list[tuple[Kernel, Kernel, Kernel, Kernel]]) -> torch.Tensor:
        """The described layer (modules/blocks.py) with q/k/v and gate/up as one product each: norm, q/k/v,
        per-head q/k RMSNorms where declared, rotary over q and k, cached attention, output product and
        residual, norm, gated or plain MLP and residual. The norms run their class's own ``forward`` (plain or
        offset RMSNorm or LayerNorm, as ``layer_error`` checked)."""
        b, s = hidden.shape[:2]
        for (_, attn, _, _, _, _, mlp, gate, up, _, norm1, norm2, q_norm, k_norm), (qkv_fn, o_fn, gu_fn, down_fn), mask \
                in zip(self.layers, kernels, masks):
            h, kv, d = attn.num_heads, attn.num_key_value_heads, attn.head_dim
            norm = type(norm1).forward
            qkv = qkv_fn(norm(norm1, hidden)).view(b, s, h + 2 * kv, d)
            if q_norm is None:
                qk = apply_rotary_heads(qkv[:, :, : h + kv], cos, sin)  # [b, seq, heads + kv_heads, head_dim]
                q, k = qk[:, :, :h].transpose(1, 2), qk[:, :, h:].transpose(1, 2)
            else:
                q = apply_rotary_heads(norm(q_norm, qkv[:, :, :h]), cos, sin).transpose(1, 2)
                k = apply_rotary_heads(norm(k_norm, qkv[:, :, h: h + kv]), cos, sin).transpose(1, 2)
            v = qkv[:, :, h + kv:].transpose(1, 2)
            if cache is not None:
                k, v = cache.update(attn.layer_idx, k, v)
            backend = get_attention_backend(attn.config.attn_implementation)
            out, _ = backend(q, k, v, mask, attn.scaling, 0.0, is_causal=mask is None, output_attentions=False,
                             training=False)
            hidden = hidden + o_fn(out.reshape(b, s, -1))
            x = gu_fn(norm(norm2, hidden))
            if gate is None:  # plain MLP: c_fc's product in x
                hidden = hidden + down_fn(mlp.act_fn(x))
            else:
                g, u = x.split([gate.out_features, up.out_features], dim=-1)
                hidden = hidden + down_fn(mlp.act_fn(g) * u)
        return hidden


def _rows_of(cache: Cache, masks: list[torch.Tensor | None], layers: int) -> tuple | None:
    """(buffers, slots, lengths) of a decode step over a cache of fixed rows, or None. A cache offers them with
    ``native_rows()``: each layer's (key, value) buffers ``[rows, kv_heads, capacity, head_dim]``, and per
    sequence of the batch its row and the positions it holds (int64 tensors), or None when the batch is not
    bound for one new position a row. The module path writes each sequence's new position at its length
    (``update``) and attends as the masks say; the native step attends over ``[0, length]`` of the sequence's
    row, so it is taken only where every mask says just that (no mask: every sequence at one length)."""
    offer = getattr(cache, "native_rows", None)
    if offer is None or isinstance(cache, DynamicCache):
        return None
    bound = offer()
    if bound is None or len(bound[0]) != layers:
        return None
    lengths = bound[2]
    seen: list[torch.Tensor] = []
    for mask in masks:
        if mask is None:
            if int(lengths.min()) != int(lengths.max()):
                return None
            continue
        if any(mask is m for m in seen):
            continue
        seen.append(mask)
        b, k = lengths.shape[0], int(lengths.max()) + 1
        if mask.dim() != 4 or mask.shape[0] != b or mask.shape[1] != 1 or mask.shape[2] != 1 or mask.shape[3] < k:
            return None
        keep = mask[:, 0, 0] if mask.dtype == torch.bool else mask[:, 0, 0] == 0
        if not torch.equal(keep, torch.arange(mask.shape[3], device=mask.device)[None] <= lengths[:, None]):
            return None
    return bound


# what the runtime knows how to run (modules/blocks.py); any other value of these fields runs the module path
# (norm_offset and qk_norm: any value, with the norm modules to match; embedding_scale: any, applied by the
# stack's layer_inputs before the layers)
KNOWN = {"norm": ("rms", "layer"), "attention": ("rotary",), "mlp": tuple(MLPS)}


def layer_error(mods: tuple[nn.Module, ...]) -> str | None:
    """Why a layer's modules are not the layer its class describes (``blocks``), or None. A class that changes
    ``forward`` (its own or its attention's) without declaring its own ``blocks`` is not described."""
    layer, attn, mlp, norm1, norm2, q_norm, k_norm = mods[0], mods[1], mods[6], mods[10], mods[11], mods[12], mods[13]
    cls = type(layer)
    owner = declared(cls, "blocks")
    if owner is None:
        return f"{cls.__name__} declares no blocks (modules/blocks.py)"
    if cls.forward is not owner.forward or type(attn).forward is not owner.attention_class.forward:
        return f"{cls.__name__} changes its forward without declaring its own blocks"
    blocks = owner.blocks
    if not isinstance(blocks, DecoderBlocks):
        return f"{cls.__name__}'s blocks {blocks!r} are not DecoderBlocks"
    other = [f"{name}={getattr(blocks, name)!r} (the runtime runs {' or '.join(map(repr, known))})"
             for name, known in KNOWN.items() if getattr(blocks, name) not in known]
    if other:
        return f"{cls.__name__}'s blocks name a block the runtime does not run: {', '.join(other)}"
    if type(mlp).forward is not MLPS[blocks.mlp].forward:
        return f"{cls.__name__}.mlp is a {type(mlp).__name__}, not the {blocks.mlp} MLP its blocks name"
    if blocks.norm == "layer" and any(type(n).forward is not nn.LayerNorm.forward for n in (norm1, norm2)):
        return f"{cls.__name__}'s norms are not the LayerNorms its blocks name"
    # the RMSNorms: every norm of an "rms" layer, the q/k norms of any
    norms = ((norm1, norm2) if blocks.norm == "rms" else ()) + ((q_norm, k_norm) if blocks.qk_norm else ())
    offset = float(blocks.norm_offset)
    if offset:  # OffsetRMSNorms with the declared offset
        wrong = any(n is None or type(n).forward is not OffsetRMSNorm.forward or n.offset != offset for n in norms)
    else:
        wrong = any(n is None or type(n).forward is not RMSNorm.forward for n in norms)
    if wrong or (not blocks.qk_norm and (q_norm is not None or k_norm is not None)):
        kind = f"OffsetRMSNorms (offset {offset})" if offset else "RMSNorms"
        return f"{cls.__name__}'s norms are not the {kind} its blocks name"
    return None


def _scale_error(model: nn.Module, layer: nn.Module) -> str | None:
    """Why the embeddings the stack's ``layer_inputs`` gives are not scaled as ``layer``'s blocks say, or None."""
    try:
        want = embedding_scale(declared(type(layer), "blocks").blocks, model.config)
    except ValueError as exc:
        return str(exc)
    have = getattr(model, "embedding_scale", None)
    if want != have:
        return f"{type(layer).__name__}'s blocks scale the embeddings by {want}, the stack by {have}"
    return None


_PROJECTIONS = {2: "self_attn.q_proj", 3: "self_attn.k_proj", 4: "self_attn.v_proj", 5: "self_attn.o_proj",
                7: "mlp.gate_proj", 8: "mlp.up_proj", 9: "mlp.down_proj"}
_PLAIN_MLP = {8: "mlp.c_fc", 9: "mlp.c_proj"}  # their names in a plain MLP (no gate in place 7)


def _effective(mods: tuple[nn.Module, ...]) -> tuple[nn.Module, ...] | str:
    """``mods`` with each LoRA-wrapped projection replaced by the module the plan runs for it
    (``adapters.effective``), or why the layer runs as modules (another adapter kind, DoRA, ...)."""
    lora = adapters.lora_class()
    out = list(mods)
    for i, path in _PROJECTIONS.items():
        m = mods[i]
        if m is None or is_plain_linear(m) or not adapters.is_adapter(m):
            continue
        path = _PLAIN_MLP.get(i, path) if mods[7] is None else path
        if lora is None or type(m) is not lora:
            return f"{path} is a {type(m).__name__} (LoRA layers are merged; other adapters run as modules)"
        if not all(_runs_as_itself(w) for w in adapters.watched(m)):
            return f"{path} is a LoRA layer with a hook, a patched forward or training mode in its modules"
        found = adapters.effective(m)
        if isinstance(found, str):
            return f"{path}: {found}"
        out[i] = found
    return tuple(out)


def _build(model: nn.Module) -> DecodePlan | None:
    layers, live = [], []
    for layer in model.layers._modules.values():
        mods = _layer_modules(layer)
        if mods is None:
            why_not(logger, f"{type(layer).__name__} is not laid out as a Llama layer")
            return None
        err = layer_error(mods) or _scale_error(model, layer)
        if err is not None:
            why_not(logger, err)
            return None
        # every module of the layer runs as itself (no hooks, no patched forward, not training) before any
        # merged copy is made
        if not all(_runs_as_itself(m) for m in mods if m is not None):
            return None
        run = _effective(mods)
        if isinstance(run, str):
            why_not(logger, run)
            return None
        # q/k/v and gate/up run as one product (plain or 4-bit layers, no hooks); o and down run as
        # themselves unless plain
        if not fusable(*run[2:5]) or not fusable(*(m for m in run[7:9] if m is not None)):
            return None
        layers.append(run)
        live.append(mods)
    plan = DecodePlan(model, layers, live)
    return plan if all(_runs_as_itself(m) for m in plan.modules) else None


def plan_for(model: nn.Module) -> DecodePlan | None:
    """The plan for ``model`` (a described decoder stack with ``layers``), valid for this call, or None when its
    layers must run as modules: training, ``torch.compile`` tracing, global hooks, or layers that are not what
    their description says (a hook, an adapter other than LoRA on a plain linear, another class)."""
    if model.training or _global_hooks() or torch.compiler.is_compiling():
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
