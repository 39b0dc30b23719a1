"""LoRA-wrapped linear layers at inference: the runtime's own merged copies of their weights.

A decode step through a LoRA layer (``peft/lora.py``) runs the base product and, for each active adapter,
two thin products and an add: with SmolLM2-135M and rank 8 on q/k/v/o, 120 extra products a step, each a
call into PyTorch. At inference (no gradient, eval mode) the layer's output is the product with one weight,
``W + sum(scaling * B @ A)`` over its active adapters that are not merged; the runtime keeps that weight as
a copy of its own and the decode plan (``decode.py``) runs the layer as a plain ``nn.Linear`` over it, so
q/k/v and gate/up stay one product each and the native one-call step (``native_step.py``) applies.

Nothing of the model changes: the copy is held in a table of this module keyed weakly by the LoRA layer,
beside a stand-in ``nn.Linear`` that reads it (and the base layer's own bias), and counts against the
packed-weight budget (``packed_weights.py``). The plan checks at every call what the copy was made from
(the base weight and bias, every used ``lora_A``/``lora_B`` weight: identity, pointer, version counter;
the active, merged and disabled adapters and their scalings): an optimizer step on the adapter updates
those in place, and the next call makes the copy again (rank 8: a few milliseconds for the model).

Layers this does not cover step aside (the module path runs, a debug line says why): other adapter kinds
(AdaLoRA, LoHa, LoKr, IA3), DoRA, a base layer other than a plain ``nn.Linear`` (quantized, Conv1D),
adapters whose ``lora_A``/``lora_B`` are not plain bias-free linears, and disabled adapters that are still
merged (the module path unmerges them on its first call). Disabled adapters run the base layer as it is.
"""
from __future__ import annotations

import sys
import weakref
from operator import attrgetter
from typing import Any

import torch
from torch import nn

from openformers.modules.dense import is_plain_linear
from openformers.runtime.packed_weights import budgeted_copy, tensor_version

# LoRA layer -> (its sources, their (pointer, version), its state key, the stand-in nn.Linear)
_MERGED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def lora_class() -> type | None:
    """``LoraLinear`` when ``openformers.peft`` is loaded (no model holds one otherwise), else None: the
    runtime never imports the adapter package."""
    module = sys.modules.get("openformers.peft.lora")
    return None if module is None else getattr(module, "LoraLinear", None)


def is_adapter(m: nn.Module) -> bool:
    """Whether ``m`` wraps a base layer with adapters (any kind)."""
    return "base_layer" in m._modules and hasattr(m, "active_adapters")


def _plain(m: Any) -> bool:
    return is_plain_linear(m) and m._parameters.get("bias") is None and m._parameters.get("weight") is not None


def terms(m: nn.Module) -> tuple[list[tuple[str, float, nn.Module, nn.Module, nn.Module]], str | None]:
    """The adapters a ``LoraLinear`` adds to its base layer's output at inference, as ``(name, scaling, lora_A,
    lora_B, dropout)``, and None; or ``([], reason)`` when the runtime does not run the layer (see the module
    docstring). No terms and no reason: the base layer alone."""
    base = m._modules["base_layer"]
    if not is_plain_linear(base):
        return [], f"a LoRA layer over a {type(base).__name__} (a plain nn.Linear base is merged)"
    if m.fan_in_fan_out:
        return [], "a LoRA layer with fan_in_fan_out=True over an nn.Linear"
    if m.disable_adapters:
        if m.merged_adapters:
            return [], "disabled LoRA adapters that are still merged into the base weight"
        return [], None
    found = []
    lora_a, lora_b, dropout = m.lora_A, m.lora_B, m.lora_dropout
    for name in m.active_adapters:
        if name in m.merged_adapters or name not in lora_a:
            continue
        if m.use_dora.get(name):
            return [], f"a DoRA adapter ({name!r}); its magnitude is not merged by the runtime"
        a, b, drop = lora_a[name], lora_b[name], dropout[name]
        if not (_plain(a) and _plain(b)) or type(drop) not in (nn.Identity, nn.Dropout):
            return [], f"LoRA adapter {name!r} with {type(a).__name__}/{type(b).__name__}/{type(drop).__name__} " \
                       "A/B/dropout modules (bias-free nn.Linear and nn.Dropout or nn.Identity are merged)"
        found.append((name, float(m.scaling[name]), a, b, drop))
    return found, None


# the attributes of a LoRA layer besides tensors that its merged copy depends on, read as they are (live)
live_state = attrgetter("disable_adapters", "active_adapters", "merged_adapters", "fan_in_fan_out", "scaling",
                        "use_dora")


def state(m: nn.Module) -> tuple:
    """What the merged copy of LoRA layer ``m`` depends on besides tensors, as a snapshot: ``live_state(m)`` with
    its lists and dicts copied, so that a later ``live_state(m) == state`` (one tuple compare, the plan's check at
    every call) sees any change to them, in place or by assignment."""
    return tuple(x.copy() if isinstance(x, (list, dict)) else x for x in live_state(m))


def sources(m: nn.Module, trail: list[tuple[dict, str]] | None = None) -> list[torch.Tensor | None]:
    """The tensors the runtime's product for LoRA layer ``m`` is made from: the base weight and bias and the A
    and B weights of each active adapter that is not merged (None where a module holds no ``weight``). Read
    with ``_modules`` and ``_parameters`` (``m.lora_A`` goes through ``nn.Module.__getattr__``, ~1 us a read).

    ``trail``, when given, gets every ``(dict, key)`` lookup made on the way, in order: for the same
    :func:`state`, the same lookups giving the same objects reach the same tensors (the plan's check)."""
    modules = m._modules
    base_module = modules["base_layer"]
    base = base_module._parameters
    weight, bias = base.get("weight"), base.get("bias")
    out = [weight] if bias is None else [weight, bias]
    if trail is not None:
        trail += [(modules, "base_layer"), (base, "weight"), (base, "bias")]
    if m.disable_adapters:
        return out
    store_a, store_b, merged = modules["lora_A"]._modules, modules["lora_B"]._modules, m.merged_adapters
    if trail is not None:
        trail += [(modules, "lora_A"), (modules, "lora_B")]
    for name in m.active_adapters:
        a = store_a.get(name)
        if trail is not None:
            trail.append((store_a, name))
        if a is None or name in merged:
            continue
        b = store_b.get(name)
        out.append(a._parameters.get("weight"))
        out.append(None if b is None else b._parameters.get("weight"))
        if trail is not None:
            trail += [(a._parameters, "weight"), (store_b, name)] + ([] if b is None else [(b._parameters, "weight")])
    return out


def watched(m: nn.Module) -> list[nn.Module]:
    """The modules of LoRA layer ``m`` whose hooks, training mode or patched ``forward`` the plan checks."""
    found, _ = terms(m)
    out = [m, m._modules["base_layer"]]
    for _, _, a, b, drop in found:
        out += [a, b, drop]
    return out


def _stamp(t: torch.Tensor) -> tuple[int, int]:
    return t.data_ptr(), tensor_version(t)


def _stand_in(base: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` of the runtime's over ``weight`` (the merged copy) and the base layer's bias."""
    layer = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(layer)
    layer.in_features, layer.out_features = base.in_features, base.out_features
    layer.weight = nn.Parameter(weight, requires_grad=False)
    layer.bias = base._parameters.get("bias")
    return layer.eval()


def effective(m: nn.Module) -> nn.Module | str:
    """The module the plan runs for LoRA layer ``m``: the base layer when no adapter applies, else a stand-in
    ``nn.Linear`` over a merged copy of the weight (kept, and remade when its sources change); or the reason
    the runtime does not run it (including a copy that the packed-weight budget has no room for)."""
    found, reason = terms(m)
    if reason is not None:
        return reason
    base = m._modules["base_layer"]
    if not found:
        return base
    tensors = sources(m)  # (terms found every A and B weight)
    key = state(m)
    held = _MERGED.get(m)
    if held is not None and held[2] == key and len(held[0]) == len(tensors) and all(
            r() is t and s == _stamp(t) for r, s, t in zip(held[0], held[1], tensors)):
        return held[3]
    _MERGED.pop(m, None)  # the outdated copy goes (and gives its bytes back) before its replacement is made
    weight = base._parameters["weight"]
    if weight.device.type != "cpu":
        return "a LoRA layer on a non-CPU device"

    def merge() -> torch.Tensor:
        with torch.no_grad():
            # the sum in float32 (as peft/lora.py's merged_weight), rounded once to the weight's dtype
            w = weight.detach().float()
            for _, scaling, a, b, _ in found:
                w = torch.addmm(w, b._parameters["weight"].detach().float(), a._parameters["weight"].detach().float(),
                                alpha=scaling)
            return w.to(weight.dtype).contiguous()
    copy = budgeted_copy(merge, weight.numel() * weight.element_size())
    if copy is None:
        return "no room in the packed-weight budget for merged LoRA weights (OPENFORMERS_PACKED_WEIGHTS_MAX_MB)"
    layer = _stand_in(base, copy)
    _MERGED[m] = (tuple(weakref.ref(t) for t in tensors), tuple(_stamp(t) for t in tensors), key, layer)
    return layer


def merged_of(m: nn.Module) -> nn.Linear | None:
    """The stand-in kept for LoRA layer ``m``, if any (for tests and diagnostics)."""
    held = _MERGED.get(m)
    return None if held is None else held[3]
