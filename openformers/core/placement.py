"""Placing a loaded model on devices: ``device_map="auto"``, a device, or a module -> device dict."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _move_to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_move_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _move_to(v, device) for k, v in value.items()}
    return value


def auto_device_map(model: nn.Module) -> dict[str, str]:
    """Spread the repeated blocks over the available GPUs by parameter count; CPU when none."""
    n_gpu = torch.cuda.device_count()
    if n_gpu <= 1:
        return {"": "cuda:0" if n_gpu == 1 else "cpu"}
    block_names = set(getattr(model, "_no_split_modules", ()))
    blocks = [name for name, m in model.named_modules() if type(m).__name__ in block_names]
    if not blocks:
        return {"": "cuda:0"}
    sizes = [sum(p.numel() for p in model.get_submodule(b).parameters()) for b in blocks]
    per_gpu = sum(sizes) / n_gpu
    mapping: dict[str, str] = {"": "cuda:0"}
    acc, gpu = 0.0, 0
    for name, size in zip(blocks, sizes):
        if acc + size > per_gpu * (gpu + 1) and gpu < n_gpu - 1:
            gpu += 1
        mapping[name] = f"cuda:{gpu}"
        acc += size
    return mapping


def place_model(model: nn.Module, device_map: str | dict[str, Any] | torch.device) -> None:
    """Move ``model`` according to ``device_map``; modules on other devices get input-moving hooks."""
    if isinstance(device_map, (str, torch.device)) and str(device_map) != "auto":
        model.to(torch.device(device_map))
        model.hf_device_map = {"": str(device_map)}
        return
    mapping = auto_device_map(model) if device_map == "auto" else dict(device_map)  # type: ignore[arg-type]
    root = mapping.pop("", None)
    if root is not None:
        model.to(torch.device(root))
    for name, dev in mapping.items():
        module = model.get_submodule(name)
        device = torch.device(dev)
        module.to(device)

        def pre_hook(mod: nn.Module, args: tuple, kwargs: dict, device: torch.device = device) -> tuple:
            return _move_to(args, device), _move_to(kwargs, device)

        module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    model.hf_device_map = {**({"": root} if root else {}), **{k: str(v) for k, v in mapping.items()}}
