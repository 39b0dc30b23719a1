"""LoRA layers injected in place of existing modules.

``LoraLinear`` wraps any linear-like module: ``nn.Linear``, GPT-2's ``Conv1D`` (weight stored
[in, out], ``fan_in_fan_out=True``) and quantized linear layers exposing ``in_features``,
``out_features``, ``forward`` and ``dequantize()``. The output is ``base(x) + B(A(dropout(x))) *
scaling``; the base layer is never modified until a merge. ``LoraEmbedding`` does the same for
``nn.Embedding``. Several named adapters can live in one layer; the active ones are summed.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openformers.modules.conv1d import Conv1D
from openformers.modules.dense import run_linear
from openformers.modules.dropout import dropout as fast_dropout, dropout_product


def is_linear_like(module: nn.Module) -> bool:
    """True for modules LoRA can wrap as a linear map (Linear, Conv1D, quantized linear layers)."""
    if isinstance(module, (nn.Linear, Conv1D)):
        return True
    return (
        isinstance(getattr(module, "in_features", None), int)
        and isinstance(getattr(module, "out_features", None), int)
        and callable(getattr(module, "forward", None))
        and not isinstance(module, AdapterLayer)
    )


def base_weight(base: nn.Module, fan_in_fan_out: bool) -> torch.Tensor:
    """The base layer's weight as [out_features, in_features] (dequantized when quantized)."""
    if not isinstance(base, (nn.Linear, Conv1D)) and hasattr(base, "dequantize"):
        return base.dequantize()
    w = base.weight
    return w.T if fan_in_fan_out else w


def is_quantized(base: nn.Module) -> bool:
    return not isinstance(base, (nn.Linear, Conv1D, nn.Embedding)) and hasattr(base, "dequantize")



def _adapter_dropout(dropout: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An adapter's ``dropout(x)``: a plain ``nn.Dropout`` draws its mask with ``modules/dropout.py`` (several
    times faster on the CPU than ``F.dropout``, another random stream); anything else runs as itself."""
    if isinstance(dropout, nn.Dropout) and not (dropout._forward_hooks or dropout._forward_pre_hooks):
        return fast_dropout(x, dropout.p, dropout.training)
    return dropout(x)

class _FrozenQuantizedLinear(torch.autograd.Function):
    """``base(x)`` for a frozen quantized layer whose kernel has no backward: the input
    gradient is ``grad @ W`` with ``W`` dequantized (needed by adapters in earlier layers)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        ctx.layer = layer
        with torch.no_grad():
            return layer(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        weight = ctx.layer.dequantize().to(device=grad.device, dtype=grad.dtype)  # [out, in]
        return grad @ weight, None


def run_base(base: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Call the wrapped layer; quantized layers get a backward through their dequantized weight."""
    if x.requires_grad and torch.is_grad_enabled() and not args and not kwargs and is_quantized(base):
        return _FrozenQuantizedLinear.apply(x, base)
    if args or kwargs:
        return base(x, *args, **kwargs)
    return run_linear(base, x)


class DoraMagnitude(nn.Module):
    """DoRA's learned per-output-feature magnitude (``weight``: [out_features])."""

    def __init__(self, magnitude: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(magnitude)


class AdapterLayer(nn.Module):
    """Shared state of an injected layer: the wrapped ``base_layer`` and active/merged adapters."""

    adapter_layer_names: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disable_adapters = False

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def adapter_names(self) -> list[str]:
        names: list[str] = []
        for attr in self.adapter_layer_names:
            for name in getattr(self, attr).keys():
                if name not in names:
                    names.append(name)
        return names

    def _adapters_off(self) -> bool:
        """True when the adapters are disabled (merged ones are taken back out of the base weight first)."""
        if self.disable_adapters and self.merged_adapters:
            self.unmerge()
        return self.disable_adapters

    def unloaded(self, merge: bool) -> nn.Module:
        """The plain module that replaces this wrapper: the base layer, merged when ``merge``."""
        if merge:
            self.merge()
        return self.base_layer

    def set_adapter(self, names: str | list[str], trainable: bool = True) -> None:
        names = [names] if isinstance(names, str) else list(names)
        for attr in self.adapter_layer_names:
            store = getattr(self, attr)
            for key in store.keys():
                item = store[key]
                params = item.parameters() if isinstance(item, nn.Module) else [item]
                for p in params:
                    p.requires_grad_(trainable and key in names)
        self.active_adapters = [n for n in names if n in self.adapter_names()]

    def delete_adapter(self, name: str) -> None:
        if name in self.merged_adapters:
            self.unmerge()
        for attr in self.adapter_layer_names:
            store = getattr(self, attr)
            if name in store:
                del store[name]
        self.active_adapters = [n for n in self.active_adapters if n != name]

    def _write_base_weight(self, weight_oi: torch.Tensor, fan_in_fan_out: bool) -> None:
        if is_quantized(self.base_layer):
            raise ValueError(
                f"cannot merge an adapter in place into the quantized layer {type(self.base_layer).__name__}; "
                "use merge_and_unload(), which dequantizes the layer and returns plain Linear layers"
            )
        w = self.base_layer.weight
        w.data = (weight_oi.T if fan_in_fan_out else weight_oi).to(w.dtype).contiguous()


class LoraLinear(AdapterLayer):
    """``base(x) + lora_B(lora_A(dropout(x))) * scaling`` for each active adapter (DoRA optional)."""

    adapter_layer_names = ("lora_A", "lora_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool = False) -> None:
        super().__init__(base_layer)
        if not is_linear_like(base_layer):
            raise TypeError(
                f"LoraLinear wraps linear layers (in_features, out_features, forward); got {type(base_layer).__name__}"
            )
        self.fan_in_fan_out = fan_in_fan_out
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_magnitude_vector = nn.ModuleDict()
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.use_dora: dict[str, bool] = {}
        self._dora_norms: dict[str, torch.Tensor] = {}

    @classmethod
    def from_base(
        cls,
        base_layer: nn.Module,
        adapter_name: str = "default",
        r: int = 8,
        lora_alpha: float = 8,
        lora_dropout: float = 0.0,
        fan_in_fan_out: bool | None = None,
        init_lora_weights: bool | str = True,
        use_rslora: bool = False,
        use_dora: bool = False,
    ) -> "LoraLinear":
        """Wrap ``base_layer`` with a first adapter. ``fan_in_fan_out`` defaults to True for Conv1D."""
        if fan_in_fan_out is None:
            fan_in_fan_out = isinstance(base_layer, Conv1D)
        layer = cls(base_layer, fan_in_fan_out=fan_in_fan_out)
        layer.update_layer(adapter_name, r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, use_dora)
        layer.set_adapter(adapter_name)
        return layer

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        for p in self.base_layer.parameters():
            dtype = p.dtype if p.is_floating_point() else torch.float32
            return p.device, dtype
        for b in self.base_layer.buffers():
            return b.device, torch.float32
        return torch.device("cpu"), torch.float32

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                     init_lora_weights: bool | str = True, use_rslora: bool = False, use_dora: bool = False) -> None:
        """Add (or replace) the adapter ``adapter_name``."""
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got r={r} for adapter {adapter_name!r}")
        device, dtype = self._device_dtype()
        if is_quantized(self.base_layer):
            dtype = torch.float32  # adapters of a quantized base train in full precision
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
        self.use_dora[adapter_name] = use_dora
        self.lora_dropout[adapter_name] = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.lora_A[adapter_name] = nn.Linear(self.in_features, r, bias=False, device=device, dtype=dtype)
        self.lora_B[adapter_name] = nn.Linear(r, self.out_features, bias=False, device=device, dtype=dtype)
        self.reset_lora_parameters(adapter_name, init_lora_weights)
        if use_dora:
            with torch.no_grad():
                norm = self._dora_weight_norm(adapter_name, self._base_oi().to(dtype))
            self.lora_magnitude_vector[adapter_name] = DoraMagnitude(norm.clone())
        elif adapter_name in self.lora_magnitude_vector:
            del self.lora_magnitude_vector[adapter_name]

    def reset_lora_parameters(self, adapter_name: str, init_lora_weights: bool | str) -> None:
        if init_lora_weights is False:
            return  # both matrices keep nn.Linear's random init: the adapter changes the output
        a = self.lora_A[adapter_name].weight
        if init_lora_weights == "gaussian":
            nn.init.normal_(a, std=1 / self.r[adapter_name])
        else:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B[adapter_name].weight)

    def _base_oi(self) -> torch.Tensor:
        return base_weight(self.base_layer, self.fan_in_fan_out)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``scaling * B @ A`` as [out_features, in_features]."""
        a = self.lora_A[adapter_name].weight
        b = self.lora_B[adapter_name].weight
        compute = torch.float32 if a.device.type == "cpu" and a.dtype in (torch.float16, torch.bfloat16) else a.dtype
        return (b.to(compute) @ a.to(compute)) * self.scaling[adapter_name]

    def _dora_weight_norm(self, adapter_name: str, w: torch.Tensor) -> torch.Tensor:
        delta = self.get_delta_weight(adapter_name).to(w.dtype)
        return torch.linalg.norm(w + delta, dim=1)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._adapters_off():
            return self.base_layer(x, *args, **kwargs)
        result = run_base(self.base_layer, x, *args, **kwargs)
        out_dtype = result.dtype
        for name in self.active_adapters:
            if name in self.merged_adapters or name not in self.lora_A:
                continue
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            if not self.use_dora[name]:
                a_out = self._dropped_a(name, x)
                # result + scaling * (A h) B^T in one addmm: no separate scale and add passes
                flat = torch.addmm(result.reshape(-1, result.shape[-1]).to(a_out.dtype), a_out.reshape(-1, a_out.shape[-1]),
                                   lora_b.weight.t(), alpha=self.scaling[name])
                result = flat.view(*result.shape[:-1], flat.shape[-1])
            else:
                h = _adapter_dropout(self.lora_dropout[name], x.to(lora_a.weight.dtype))
                result = result + self._dora_term(name, x, h, result)
        return result.to(out_dtype)

    def _dropped_a(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``lora_A(dropout(x))``. The masks come from modules/dropout.py (a faster draw than peft's
        ``bernoulli_``), and on the CPU in float32 the dropout and the product run as one native kernel
        that stores neither the mask nor the dropped ``x``."""
        lora_a, drop = self.lora_A[name], self.lora_dropout[name]
        plain = not (lora_a._forward_hooks or lora_a._forward_pre_hooks or drop._forward_hooks or drop._forward_pre_hooks)
        if plain and isinstance(drop, nn.Dropout) and drop.training:
            fused = dropout_product(x, lora_a.weight, drop.p)
            if fused is not None:
                return fused
        return run_linear(lora_a, _adapter_dropout(drop, x.to(lora_a.weight.dtype)))

    def _dora_term(self, name: str, x: torch.Tensor, h: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        lora_a, lora_b = self.lora_A[name], self.lora_B[name]
        w = self._base_oi().to(lora_a.weight.dtype)
        norm = self._dora_weight_norm(name, w).detach()  # treated as a constant (DoRA paper, 4.3)
        scale = self.lora_magnitude_vector[name].weight / norm
        if isinstance(self.lora_dropout[name], nn.Identity):
            bias = getattr(self.base_layer, "bias", None)
            base = result if bias is None else result - bias
        else:
            base = F.linear(h, w)
        return (scale - 1) * base.to(scale.dtype) + scale * lora_b(lora_a(h)) * self.scaling[name]

    # -- merging -----------------------------------------------------------------------------
    def merged_weight(self, adapter_names: list[str]) -> torch.Tensor:
        """The base weight [out, in] with ``adapter_names`` merged in (not written back)."""
        w = self._base_oi().detach().float()
        for name in adapter_names:
            if self.use_dora.get(name):
                full = w + self.get_delta_weight(name).float()
                norm = torch.linalg.norm(full, dim=1)
                self._dora_norms[name] = norm
                w = (self.lora_magnitude_vector[name].weight.detach().float() / norm)[:, None] * full
            else:
                w = w + self.get_delta_weight(name).detach().float()
        return w

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        names = [n for n in (adapter_names or self.active_adapters) if n in self.lora_A and n not in self.merged_adapters]
        if not names:
            return
        merged = self.merged_weight(names)
        if safe_merge and not torch.isfinite(merged).all():
            raise ValueError(f"merging adapters {names} produced non-finite weights; the adapter is broken")
        self._write_base_weight(merged, self.fan_in_fan_out)
        self.merged_adapters.extend(names)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            w = self._base_oi().detach().float()
            if self.use_dora.get(name):
                scale = self.lora_magnitude_vector[name].weight.detach().float() / self._dora_norms[name]
                w = w / scale[:, None] - self.get_delta_weight(name).detach().float()
            else:
                w = w - self.get_delta_weight(name).detach().float()
            self._write_base_weight(w, self.fan_in_fan_out)

    def unloaded(self, merge: bool) -> nn.Module:
        """The plain module that replaces this wrapper: the base layer, merged when ``merge``."""
        base = self.base_layer
        if merge and is_quantized(base):
            weight = self.merged_weight([n for n in self.active_adapters if n in self.lora_A and n not in self.merged_adapters])
            if self.merged_adapters:
                raise ValueError("a quantized layer cannot hold merged adapters")
            bias = getattr(base, "bias", None)
            dtype = torch.float32
            linear = nn.Linear(self.in_features, self.out_features, bias=bias is not None, device=weight.device, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(weight)
                if bias is not None:
                    linear.bias.copy_(bias.float())
            return linear
        if merge:
            self.merge()
        return base

    def extra_repr(self) -> str:
        return f"adapters={self.adapter_names()}, r={self.r}, fan_in_fan_out={self.fan_in_fan_out}"


class LoraEmbedding(AdapterLayer):
    """LoRA on ``nn.Embedding``: ``embedding(x) + (onehot(x) @ A^T) @ B^T * scaling``."""

    adapter_layer_names = ("lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.use_dora: dict[str, bool] = {}

    @property
    def in_features(self) -> int:
        return self.base_layer.num_embeddings

    @property
    def out_features(self) -> int:
        return self.base_layer.embedding_dim

    @classmethod
    def from_base(cls, base_layer: nn.Embedding, adapter_name: str = "default", r: int = 8, lora_alpha: float = 8,
                  lora_dropout: float = 0.0, init_lora_weights: bool | str = True, use_rslora: bool = False,
                  use_dora: bool = False, **_: Any) -> "LoraEmbedding":
        layer = cls(base_layer)
        layer.update_layer(adapter_name, r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, use_dora)
        layer.set_adapter(adapter_name)
        return layer

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                     init_lora_weights: bool | str = True, use_rslora: bool = False, use_dora: bool = False) -> None:
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got r={r} for adapter {adapter_name!r}")
        if use_dora:
            raise ValueError("use_dora=True is not supported on embedding layers; drop the embedding from target_modules")
        w = self.base_layer.weight
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
        self.use_dora[adapter_name] = False
        self.lora_dropout[adapter_name] = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        a = torch.empty(r, self.in_features, device=w.device, dtype=w.dtype)
        b = torch.empty(self.out_features, r, device=w.device, dtype=w.dtype)
        if init_lora_weights is False:
            nn.init.normal_(a)
            nn.init.normal_(b)
        else:
            nn.init.zeros_(a)
            nn.init.normal_(b)
        self.lora_embedding_A[adapter_name] = nn.Parameter(a)
        self.lora_embedding_B[adapter_name] = nn.Parameter(b)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """[num_embeddings, embedding_dim]"""
        return (self.lora_embedding_B[adapter_name] @ self.lora_embedding_A[adapter_name]).T * self.scaling[adapter_name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._adapters_off():
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        base = self.base_layer
        for name in self.active_adapters:
            if name in self.merged_adapters or name not in self.lora_embedding_A:
                continue
            after_a = F.embedding(x, self.lora_embedding_A[name].T, base.padding_idx, base.max_norm, base.norm_type,
                                  base.scale_grad_by_freq, base.sparse)
            result = result + (after_a @ self.lora_embedding_B[name].T) * self.scaling[name]
        return result

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        names = [n for n in (adapter_names or self.active_adapters) if n in self.lora_embedding_A and n not in self.merged_adapters]
        w = self.base_layer.weight.detach()
        for name in names:
            merged = w + self.get_delta_weight(name).detach().to(w.dtype)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"merging adapter {name!r} produced non-finite weights")
            self.base_layer.weight.data = merged
            w = merged
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            w = self.base_layer.weight
            w.data = w.data - self.get_delta_weight(name).detach().to(w.dtype)


def wrap_lora(module: nn.Module, adapter_name: str, r: int, lora_alpha: float, lora_dropout: float,
              fan_in_fan_out: bool, init_lora_weights: bool | str, use_rslora: bool, use_dora: bool) -> AdapterLayer:
    """The LoRA layer for ``module`` (Embedding or linear-like)."""
    kw = dict(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, init_lora_weights=init_lora_weights,
              use_rslora=use_rslora, use_dora=use_dora)
    if isinstance(module, nn.Embedding):
        return LoraEmbedding.from_base(module, adapter_name, **kw)
    if isinstance(module, Conv1D):
        fan_in_fan_out = True
    return LoraLinear.from_base(module, adapter_name, fan_in_fan_out=fan_in_fan_out, **kw)
