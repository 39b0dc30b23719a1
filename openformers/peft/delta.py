"""Adapters on ``nn.Linear`` whose update is a full-size weight delta (AdaLoRA, LoHa, LoKr).

A subclass gives ``get_delta_weight(name)`` ([out_features, in_features], scaled) and
``_add_update(name, x, result)`` (its term added to the base layer's output); merging adds the
delta to the base weight in place, unmerging takes it back out.
"""
from __future__ import annotations

from typing import Any

import torch

from openformers.peft.lora import AdapterLayer


class DeltaLinear(AdapterLayer):
    """Forward, merge and unmerge shared by the adapters that hold a weight delta for ``nn.Linear``."""

    method = ""  # the adapter's name in error messages

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define get_delta_weight")

    def _add_update(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define _add_update")

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._adapters_off():
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged_adapters:
            return result
        available = self.adapter_names()
        for name in self.active_adapters:
            if name in available:
                result = self._add_update(name, x, result)
        return result.to(x.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        available = self.adapter_names()
        names = [n for n in (adapter_names or self.active_adapters) if n in available and n not in self.merged_adapters]
        weight = self.base_layer.weight
        for name in names:
            with torch.no_grad():
                new = weight.data + self.get_delta_weight(name).to(weight.dtype)
            if safe_merge and not torch.isfinite(new).all():
                raise ValueError(f"merging {self.method} adapter {name!r} produced non-finite weights; the adapter is broken")
            weight.data = new
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        weight = self.base_layer.weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            with torch.no_grad():
                weight.data = weight.data - self.get_delta_weight(name).to(weight.dtype)
