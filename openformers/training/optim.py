"""Optimiser construction from TrainingArguments: weight decay skips biases and norm weights."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from openformers.training.arguments import OptimizerSettings


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)) or "Norm" in type(module).__name__


def decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that get weight decay: everything but biases and norm weights."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        norm = _is_norm(module)
        for param_name, _ in module.named_parameters(recurse=False):
            if norm or param_name == "bias" or param_name.endswith("_bias"):
                continue
            names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def _parse_optim_args(text: str | None) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for item in (text or "").replace(" ", "").split(","):
        if not item:
            continue
        key, _, value = item.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def _fused_supported(groups: list[dict]) -> bool:
    """Whether torch's fused AdamW kernel takes every parameter (floating dtype on CPU, CUDA, XPU or MPS)."""
    params = [p for g in groups for p in g["params"]]
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda", "xpu", "mps") for p in params) and \
        len({p.device for p in params}) == 1


# torch's optimizer methods without the wrappers torch puts around them (see AdamW), resolved once
_ADD_PARAM_GROUP = inspect.unwrap(torch.optim.Optimizer.add_param_group)
_ZERO_GRAD = inspect.unwrap(torch.optim.Optimizer.zero_grad)
_STATE_DICT = inspect.unwrap(torch.optim.Optimizer.state_dict)
_LOAD_STATE_DICT = inspect.unwrap(torch.optim.Optimizer.load_state_dict)
_ADAMW_STEP = inspect.unwrap(torch.optim.AdamW.step)


class AdamW(torch.optim.AdamW):
    """torch's AdamW: the same update, state, ``state_dict`` and hooks, called without the
    compiler guards torch wraps around its optimizer methods.

    Those guards (which keep torch.compile from tracing ``step``, ``zero_grad``,
    ``add_param_group`` and the state-dict methods) import the whole compiler stack,
    ``torch._dynamo``, on their first call: about 1.5 s of a short eager fine-tune spent before its
    first update. The trainer never compiles the optimizer, so it skips them; a model compiled
    with ``torch_compile`` still is.
    """

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _ZERO_GRAD(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _STATE_DICT(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _LOAD_STATE_DICT(self, state_dict)

    def step(self, closure: Any = None) -> Any:
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return _ADAMW_STEP(self, closure)


def create_optimizer(model: nn.Module, settings: OptimizerSettings) -> torch.optim.Optimizer:
    decay = decay_parameter_names(model)
    with_decay, without_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (with_decay if name in decay else without_decay).append(param)
    if not with_decay and not without_decay:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    groups = [
        {"params": with_decay, "weight_decay": settings.weight_decay},
        {"params": without_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    extra = _parse_optim_args(settings.optim_args)
    lr = settings.learning_rate
    name = settings.name
    if name in ("adamw_torch", "adamw_hf", "adamw", "adamw_torch_fused"):
        if "fused" not in extra and "foreach" not in extra:
            # every AdamW name is torch's AdamW; the fused kernel computes the same update (bit for
            # bit on CPU) in one pass per tensor, where foreach runs a dozen whole-model passes with
            # temporaries: ~5x faster steps on CPU and no extra peak memory
            if _fused_supported(groups):
                extra = {**extra, "fused": True}
        return _mark_updates(AdamW(groups, lr=lr, betas=settings.betas, eps=settings.eps, **extra))  # type: ignore[arg-type]
    if name == "adam":
        return _mark_updates(torch.optim.Adam(groups, lr=lr, betas=settings.betas, eps=settings.eps, **extra))  # type: ignore[arg-type]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, **extra)  # type: ignore[arg-type]
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, **extra)  # type: ignore[arg-type]
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, **extra)  # type: ignore[arg-type]
    if name == "adafactor":
        return torch.optim.Adafactor(groups, lr=lr, **extra)  # type: ignore[arg-type]
    raise ValueError(f"optim={name!r} is not supported")


def _mark_updates(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Bump each parameter's version counter after a fused Adam/AdamW step.

    torch's fused kernels update the parameters in place without bumping ``_version``, which is
    how inference-time copies (packed weights, decode plans) notice that a weight changed: without
    this, generating after training steps could run on the weights from before them.
    """
    if optimizer.defaults.get("fused"):
        def bump(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            for group in opt.param_groups:
                for p in group["params"]:
                    torch.autograd.graph.increment_version(p)

        optimizer.register_step_post_hook(bump)
    return optimizer
