"""What the post-training trainers share: model and tokenizer set-up, LoRA, logged statistics."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from openformers.training.trainer import Trainer


def load_model(model: Any, args: Any, auto_class: str = "AutoModelForCausalLM", **extra: Any) -> nn.Module:
    """A model object as given; a path or embedded name loaded with ``args.model_init_kwargs``."""
    if isinstance(model, nn.Module):
        return model
    if not isinstance(model, str):
        raise TypeError(f"model= must be a model or a path/name string, got {type(model).__name__}")
    import openformers

    kwargs = {**(getattr(args, "model_init_kwargs", None) or {}), **extra}
    return getattr(openformers, auto_class).from_pretrained(model, **kwargs)


def load_tokenizer(processing_class: Any, tokenizer: Any, model: nn.Module) -> Any:
    if processing_class is not None and tokenizer is not None and processing_class is not tokenizer:
        raise ValueError("pass either processing_class= or tokenizer= (its older name), not both")
    tok = processing_class if processing_class is not None else tokenizer
    if tok is None:
        name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
        if not name:
            raise ValueError("no tokenizer: pass processing_class= (the model records no path to load one from)")
        from openformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name)
    if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
        tok.pad_token = tok.eos_token
    return tok


def apply_peft(model: nn.Module, peft_config: Any, args: Any) -> nn.Module:
    """Wrap ``model`` with the adapter of ``peft_config`` (k-bit models prepared for training first)."""
    if peft_config is None:
        return model
    from openformers.peft import get_peft_model, prepare_model_for_kbit_training

    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False) or \
        getattr(model, "is_quantized", False)
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(args.gradient_checkpointing))
    if args.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # frozen embeddings: checkpointed layers still need a grad path
    return get_peft_model(model, peft_config)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


class RLTrainerMixin:
    """Statistics a trainer records per micro-batch and logs averaged beside the loss (as TRL does)."""

    _extra_columns: tuple[str, ...] = ()

    def _init_metrics(self) -> None:
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def _record(self, model: nn.Module, values: dict[str, float | torch.Tensor]) -> None:
        mode = "train" if model.training else "eval"
        for k, v in values.items():
            self._metrics[mode][k].append(float(v))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        if "loss" in logs or "eval_loss" in logs:
            prefix = "eval_" if mode == "eval" else ""
            averaged = {f"{prefix}{k}": sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
            logs = {**logs, **averaged}
            self._metrics[mode].clear()
        Trainer.log(self, logs, start_time)  # type: ignore[arg-type]

    def _signature(self) -> list[str]:
        return Trainer._signature(self) + list(self._extra_columns)  # type: ignore[arg-type]
