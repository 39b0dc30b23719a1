"""QLoRA helpers: preparing a quantized model for adapter training, and measuring what a
merge into dequantized weights changes."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

_NORM_TYPES = (nn.LayerNorm,)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def prepare_model_for_kbit_training(model: nn.Module, use_gradient_checkpointing: bool = True,
                                    gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Freeze every base parameter, keep norms in float32, make the input embeddings' output
    require grad (so checkpointed layers see a graph), and turn on gradient checkpointing."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in model.modules():
        if _is_norm(module):
            for p in module.parameters(recurse=False):
                if p.is_floating_point() and p.dtype != torch.float32:
                    p.data = p.data.float()
    if use_gradient_checkpointing:
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
        else:
            model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_(True))
        if hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs or {"use_reentrant": False})
    return model


@torch.no_grad()
def max_logit_change(model_a: nn.Module, model_b: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between the logits of two models on ``batch`` (e.g. a
    LoRA model on a quantized base before ``merge_and_unload`` and the merged model after)."""
    out_a = model_a(**batch)
    out_b = model_b(**batch)
    la = out_a.logits if hasattr(out_a, "logits") else out_a[0]
    lb = out_b.logits if hasattr(out_b, "logits") else out_b[0]
    return float((la.float() - lb.float()).abs().max())
