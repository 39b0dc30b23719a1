"""LyCORIS-style adapters on linear layers: LoHa (Hadamard product) and LoKr (Kronecker product).

Both add a full-size weight update ``delta W`` built from small factors to the wrapped
``nn.Linear``: ``base(x) + x @ delta_W.T``. The factors are kept in ``nn.ParameterDict``s named
as the peft package names them (``hada_w1_a``... / ``lokr_w1``...), so a saved adapter reads
``...q_proj.hada_w1_a`` and loads both ways.

- LoHa: ``delta W = ((w1_a @ w1_b) * (w2_a @ w2_b)) * alpha / r``; ``w2_b`` starts at zero.
- LoKr: ``delta W = kron(w1, w2) * alpha / r`` with ``out = a*b``, ``in = c*d`` split by
  :func:`factorization`; ``w1`` ([a, c]) is full unless ``decompose_both`` and ``r`` is small,
  ``w2`` ([b, d]) is full unless ``r`` is under half its larger side, else ``*_a @ *_b``.

While training, ``module_dropout`` skips the whole update of a layer with that probability, and
``rank_dropout`` zeroes rows of ``delta W`` (LoHa always rescales the kept rows by their mean,
LoKr only with ``rank_dropout_scale``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from openformers.peft.delta import DeltaLinear


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Two numbers ``(m, n)``, ``m <= n``, with ``m * n == dimension``: ``(factor, dimension //
    factor)`` when ``factor`` divides it, else the divisor pair nearest the square root whose
    smaller side stays at most ``factor`` (any size when ``factor`` is -1)."""
    if dimension <= 0:
        raise ValueError(f"factorization: dimension must be positive, got {dimension}")
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    limit = dimension if factor == -1 else factor
    m, n = 1, dimension
    while m < n:
        candidate = m + 1
        while dimension % candidate:
            candidate += 1
        other = dimension // candidate
        if candidate + other > m + n or candidate > limit:
            break
        m, n = candidate, other
    return (n, m) if m > n else (m, n)


def _check_base(base_layer: nn.Module, method: str) -> None:
    if not isinstance(base_layer, nn.Linear):
        raise TypeError(
            f"{method} wraps nn.Linear layers; got {type(base_layer).__name__} (GPT-2 style Conv1D and quantized layers "
            f"are not supported by {method}: target the model's nn.Linear modules or use LoRA)"
        )


class LycorisLinear(DeltaLinear):
    """Shared part of LoHa and LoKr on ``nn.Linear``: scaling, dropouts and the dropped update."""

    def __init__(self, base_layer: nn.Module) -> None:
        _check_base(base_layer, self.method)
        super().__init__(base_layer)
        for attr in self.adapter_layer_names:
            setattr(self, attr, nn.ParameterDict())
        self.r: dict[str, int] = {}
        self.alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.rank_dropout: dict[str, float] = {}
        self.rank_dropout_scale: dict[str, bool] = {}
        self.module_dropout: dict[str, float] = {}

    def _new(self, adapter_name: str, attr: str, *shape: int) -> None:
        w = self.base_layer.weight
        dtype = w.dtype if w.is_floating_point() else torch.float32
        getattr(self, attr)[adapter_name] = nn.Parameter(torch.empty(*shape, device=w.device, dtype=dtype))

    def _set_common(self, adapter_name: str, r: int, alpha: float, rank_dropout: float, module_dropout: float,
                    rank_dropout_scale: bool) -> None:
        if not isinstance(r, int) or r <= 0:
            raise ValueError(f"{self.method} rank r must be a positive integer, got r={r!r} for adapter {adapter_name!r}")
        for name, p in (("rank_dropout", rank_dropout), ("module_dropout", module_dropout)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{self.method}: {name} must be in [0, 1], got {p}")
        self.r[adapter_name] = r
        self.alpha[adapter_name] = alpha
        self.scaling[adapter_name] = alpha / r
        self.rank_dropout[adapter_name] = float(rank_dropout)
        self.rank_dropout_scale[adapter_name] = rank_dropout_scale
        self.module_dropout[adapter_name] = float(module_dropout)

    def _factors_delta(self, adapter_name: str) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define _factors_delta")

    def get_delta_weight(self, adapter_name: str, apply_rank_dropout: bool = False) -> torch.Tensor:
        """The weight update ``[out_features, in_features]`` of ``adapter_name`` (scaled)."""
        weight = self._factors_delta(adapter_name).reshape(self.base_layer.weight.shape)
        if apply_rank_dropout:
            keep = (torch.rand(weight.size(0)) > self.rank_dropout[adapter_name]).to(weight.dtype).to(weight.device)
            if self.rank_dropout_scale[adapter_name]:
                keep = keep / keep.mean()
            weight = weight * keep[:, None]
        return weight

    def _add_update(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(torch.rand(1) > self.module_dropout[name]):
            return result  # module dropout: this layer's update is skipped for the step
        delta = self.get_delta_weight(name, apply_rank_dropout=self.training and bool(self.rank_dropout[name]))
        return result + F.linear(x.to(delta.dtype), delta)

    def extra_repr(self) -> str:
        return f"adapters={self.adapter_names()}, r={self.r}"


class LoHaLinear(LycorisLinear):
    """LoHa on ``nn.Linear``: ``base(x) + x @ (((w1_a @ w1_b) * (w2_a @ w2_b)) * alpha / r).T``."""

    method = "LoHa"
    adapter_layer_names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")

    @classmethod
    def from_base(cls, base_layer: nn.Module, adapter_name: str = "default", r: int = 8, alpha: float = 8,
                  rank_dropout: float = 0.0, module_dropout: float = 0.0, init_weights: bool = True) -> "LoHaLinear":
        layer = cls(base_layer)
        layer.update_layer(adapter_name, r, alpha, rank_dropout, module_dropout, init_weights)
        layer.set_adapter(adapter_name)
        return layer

    def update_layer(self, adapter_name: str, r: int, alpha: float, rank_dropout: float = 0.0,
                     module_dropout: float = 0.0, init_weights: bool = True) -> None:
        """Add (or replace) adapter ``adapter_name``; ``init_weights=True`` makes it start as a no-op."""
        self._set_common(adapter_name, r, alpha, rank_dropout, module_dropout, True)
        out_f, in_f = self.base_layer.weight.shape
        self._new(adapter_name, "hada_w1_a", out_f, r)
        self._new(adapter_name, "hada_w1_b", r, in_f)
        self._new(adapter_name, "hada_w2_a", out_f, r)
        self._new(adapter_name, "hada_w2_b", r, in_f)
        for attr in self.adapter_layer_names:
            nn.init.kaiming_uniform_(getattr(self, attr)[adapter_name], a=math.sqrt(5))
        if init_weights:
            nn.init.zeros_(self.hada_w2_b[adapter_name])

    def _factors_delta(self, adapter_name: str) -> torch.Tensor:
        w1 = self.hada_w1_a[adapter_name] @ self.hada_w1_b[adapter_name]
        w2 = self.hada_w2_a[adapter_name] @ self.hada_w2_b[adapter_name]
        return (w1 * w2) * self.scaling[adapter_name]


class LoKrLinear(LycorisLinear):
    """LoKr on ``nn.Linear``: ``base(x) + x @ (kron(w1, w2) * alpha / r).T`` (factors optionally low-rank)."""

    method = "LoKr"
    adapter_layer_names = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")

    @classmethod
    def from_base(cls, base_layer: nn.Module, adapter_name: str = "default", r: int = 8, alpha: float = 8,
                  rank_dropout: float = 0.0, module_dropout: float = 0.0, init_weights: bool | str = True,
                  decompose_both: bool = False, decompose_factor: int = -1,
                  rank_dropout_scale: bool = False) -> "LoKrLinear":
        layer = cls(base_layer)
        layer.update_layer(adapter_name, r, alpha, rank_dropout, module_dropout, init_weights, decompose_both,
                           decompose_factor, rank_dropout_scale)
        layer.set_adapter(adapter_name)
        return layer

    def update_layer(self, adapter_name: str, r: int, alpha: float, rank_dropout: float = 0.0,
                     module_dropout: float = 0.0, init_weights: bool | str = True, decompose_both: bool = False,
                     decompose_factor: int = -1, rank_dropout_scale: bool = False) -> None:
        """Add (or replace) adapter ``adapter_name``.

        ``init_weights=True`` zeroes ``w1`` (or ``w1_a``), ``"lycoris"`` zeroes ``w2`` (or ``w2_b``)
        instead; both make the adapter start as a no-op. ``False`` leaves every factor random."""
        self._set_common(adapter_name, r, alpha, rank_dropout, module_dropout, rank_dropout_scale)
        for attr in self.adapter_layer_names:  # replacing: the factor layout may change
            store = getattr(self, attr)
            if adapter_name in store:
                del store[adapter_name]
        out_l, out_k = factorization(self.out_features, decompose_factor)
        in_m, in_n = factorization(self.in_features, decompose_factor)
        # out = out_l * out_k, in = in_m * in_n; w1: [out_l, in_m], w2: [out_k, in_n]
        full_w1 = not (decompose_both and r < max(out_l, in_m) / 2)
        full_w2 = not (r < max(out_k, in_n) / 2)
        if full_w1:
            self._new(adapter_name, "lokr_w1", out_l, in_m)
        else:
            self._new(adapter_name, "lokr_w1_a", out_l, r)
            self._new(adapter_name, "lokr_w1_b", r, in_m)
        if full_w2:
            self._new(adapter_name, "lokr_w2", out_k, in_n)
        else:
            self._new(adapter_name, "lokr_w2_a", out_k, r)
            self._new(adapter_name, "lokr_w2_b", r, in_n)
        for attr in self.adapter_layer_names:
            if adapter_name in getattr(self, attr):
                nn.init.kaiming_uniform_(getattr(self, attr)[adapter_name], a=math.sqrt(5))
        if init_weights == "lycoris":
            nn.init.zeros_(self.lokr_w2[adapter_name] if full_w2 else self.lokr_w2_b[adapter_name])
        elif init_weights:
            nn.init.zeros_(self.lokr_w1[adapter_name] if full_w1 else self.lokr_w1_a[adapter_name])

    def _factors_delta(self, adapter_name: str) -> torch.Tensor:
        if adapter_name in self.lokr_w1:
            w1 = self.lokr_w1[adapter_name]
        else:
            w1 = self.lokr_w1_a[adapter_name] @ self.lokr_w1_b[adapter_name]
        if adapter_name in self.lokr_w2:
            w2 = self.lokr_w2[adapter_name]
        else:
            w2 = self.lokr_w2_a[adapter_name] @ self.lokr_w2_b[adapter_name]
        return torch.kron(w1, w2.contiguous()) * self.scaling[adapter_name]
