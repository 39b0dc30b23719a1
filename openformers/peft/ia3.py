"""(IA)^3 layers: learned per-feature scales on a linear layer's output, or on its input for
feed-forward layers. Initialised to ones, so the wrapped model starts unchanged."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from openformers.modules.conv1d import Conv1D
from openformers.peft.lora import AdapterLayer, base_weight, is_linear_like, run_base


class IA3Linear(AdapterLayer):
    """``base(x) * l`` (or ``base(x * l)`` when ``is_feedforward``) with ``l`` the product of the active scales."""

    adapter_layer_names = ("ia3_l",)

    def __init__(self, base_layer: nn.Module, is_feedforward: bool, fan_in_fan_out: bool = False) -> None:
        super().__init__(base_layer)
        if not is_linear_like(base_layer):
            raise TypeError(f"IA3Linear wraps linear layers; got {type(base_layer).__name__}")
        self.is_feedforward = is_feedforward
        self.fan_in_fan_out = fan_in_fan_out or isinstance(base_layer, Conv1D)
        self.ia3_l = nn.ParameterDict()

    @classmethod
    def from_base(cls, base_layer: nn.Module, adapter_name: str = "default", is_feedforward: bool = False,
                  fan_in_fan_out: bool = False, init_ia3_weights: bool = True) -> "IA3Linear":
        layer = cls(base_layer, is_feedforward, fan_in_fan_out)
        layer.update_layer(adapter_name, init_ia3_weights)
        layer.set_adapter(adapter_name)
        return layer

    def update_layer(self, adapter_name: str, init_ia3_weights: bool = True) -> None:
        shape = (1, self.in_features) if self.is_feedforward else (self.out_features, 1)
        ref = next(iter(self.base_layer.parameters()), None)
        device = ref.device if ref is not None else None
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        value = torch.ones(shape, device=device, dtype=dtype)
        if not init_ia3_weights:
            nn.init.normal_(value, mean=1.0, std=0.02)
        self.ia3_l[adapter_name] = nn.Parameter(value)

    def _scale(self, names: list[str]) -> torch.Tensor | None:
        scale = None
        for name in names:
            if name in self.ia3_l:
                v = self.ia3_l[name].flatten()
                scale = v if scale is None else scale * v
        return scale

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._adapters_off():
            return self.base_layer(x, *args, **kwargs)
        scale = self._scale([n for n in self.active_adapters if n not in self.merged_adapters])
        if scale is None:
            return self.base_layer(x, *args, **kwargs)
        if self.is_feedforward:
            return run_base(self.base_layer, (x * scale).to(x.dtype), *args, **kwargs)
        out = run_base(self.base_layer, x, *args, **kwargs)
        return (out * scale).to(out.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        names = [n for n in (adapter_names or self.active_adapters) if n in self.ia3_l and n not in self.merged_adapters]
        for name in names:
            self._rescale(self.ia3_l[name].detach().flatten(), safe_merge)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            self._rescale(1.0 / (self.ia3_l[name].detach().flatten() + 1e-8), False)

    def _rescale(self, scale: torch.Tensor, safe: bool) -> None:
        w = base_weight(self.base_layer, self.fan_in_fan_out).detach()
        new = w * scale[None, :] if self.is_feedforward else w * scale[:, None]
        if safe and not torch.isfinite(new).all():
            raise ValueError("merging the IA3 adapter produced non-finite weights")
        self._write_base_weight(new, self.fan_in_fan_out)
        bias = getattr(self.base_layer, "bias", None)
        if bias is not None and not self.is_feedforward:
            bias.data = bias.data * scale.to(bias.dtype)
