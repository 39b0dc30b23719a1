"""A causal LM with a scalar value head (TRL's ``AutoModelForCausalLMWithValueHead``).

The head is ``v_head.summary`` (dropout, then a linear layer to one value per token). It is saved
the way TRL saves it: the language model's tensors and ``v_head.summary.weight`` /
``v_head.summary.bias`` in one checkpoint, so checkpoints move between the two libraries.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

V_HEAD_PREFIX = "v_head."


class ValueHead(nn.Module):
    """Dropout then a linear map from the last hidden state to one value per position."""

    def __init__(self, hidden_size: int, summary_dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(summary_dropout_prob) if summary_dropout_prob else nn.Identity()
        self.summary = nn.Linear(hidden_size, 1)
        self.flatten = nn.Flatten()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.dropout(hidden_states)
        if out.dtype != self.summary.weight.dtype:
            out = out.to(self.summary.weight.dtype)
        return self.summary(out)


def _hidden_size(config: Any) -> int:
    for name in ("hidden_size", "n_embd", "d_model", "word_embed_proj_dim"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"{type(config).__name__} names no hidden size (hidden_size, n_embd or d_model): "
                     "the value head cannot be sized")


class AutoModelForCausalLMWithValueHead(nn.Module):
    """``pretrained_model`` (any causal LM of ours, possibly with a LoRA adapter) plus ``v_head``.

    ``forward`` returns ``(lm_logits, loss, values)`` as TRL does; ``generate`` is the language
    model's. ``v_head_init_strategy="normal"`` draws the head with ``v_head_initializer_range``.
    """

    _is_causal_lm = True

    def __init__(self, pretrained_model: nn.Module, summary_dropout_prob: float = 0.1,
                 v_head_initializer_range: float = 0.2, v_head_init_strategy: str | None = None) -> None:
        super().__init__()
        self.pretrained_model = pretrained_model
        self.config = pretrained_model.config
        self.v_head = ValueHead(_hidden_size(self.config), summary_dropout_prob)
        if v_head_init_strategy == "normal":
            self.v_head.summary.weight.data.normal_(mean=0.0, std=v_head_initializer_range)
            self.v_head.summary.bias.data.zero_()
        self.is_peft_model = hasattr(pretrained_model, "disable_adapter") and hasattr(pretrained_model, "get_base_model")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, peft_config: Any = None,
                        summary_dropout_prob: float = 0.1, v_head_initializer_range: float = 0.2,
                        v_head_init_strategy: str | None = None, **kwargs: Any) -> AutoModelForCausalLMWithValueHead:
        """Wrap a model object, or load one (with its ``v_head`` when the checkpoint has it)."""
        if isinstance(pretrained_model_name_or_path, nn.Module):
            base, path = pretrained_model_name_or_path, None
        else:
            from openformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            path = Path(os.fspath(pretrained_model_name_or_path))
        if peft_config is not None:
            from openformers.peft import get_peft_model

            base = get_peft_model(base, peft_config)
        model = cls(base, summary_dropout_prob=summary_dropout_prob, v_head_initializer_range=v_head_initializer_range,
                    v_head_init_strategy=v_head_init_strategy)
        if path is not None and path.is_dir():
            state = _read_v_head(path)
            if state:
                model.v_head.load_state_dict(state)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """The language model's files, with ``v_head.*`` added to its checkpoint (TRL's layout).

        With an adapter, the adapter is saved and the head goes to ``v_head.safetensors`` beside it."""
        head = {V_HEAD_PREFIX + k: v.detach().contiguous() for k, v in self.v_head.state_dict().items()}
        if self.is_peft_model:
            from safetensors.torch import save_file

            self.pretrained_model.save_pretrained(save_directory, **kwargs)
            save_file(head, str(Path(save_directory) / "v_head.safetensors"))
            return
        state = {**self.pretrained_model.state_dict(), **head}
        self.pretrained_model.save_pretrained(save_directory, state_dict=state, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """The language model's keys as they are saved, plus ``v_head.*`` (TRL's flat layout)."""
        if args or kwargs.get("destination") is not None:
            return super().state_dict(*args, **kwargs)
        state = dict(self.pretrained_model.state_dict())
        state.update({V_HEAD_PREFIX + k: v for k, v in self.v_head.state_dict().items()})
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        head = {k[len(V_HEAD_PREFIX):]: v for k, v in state_dict.items() if k.startswith(V_HEAD_PREFIX)}
        rest = {k: v for k, v in state_dict.items() if not k.startswith(V_HEAD_PREFIX)}
        if head:
            self.v_head.load_state_dict(head, strict=strict)
        if rest:
            return self.pretrained_model.load_state_dict(rest, strict=strict, assign=assign)
        return None

    # -- running --------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: Any = None, return_past_key_values: bool = False, **kwargs: Any) -> tuple:
        kwargs["output_hidden_states"] = True
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask,
                                    past_key_values=past_key_values, **kwargs)
        hidden = out["hidden_states"][-1]
        values = self.v_head(hidden).squeeze(-1)
        logits = out["logits"]
        if logits.dtype != torch.float32:
            logits = logits.float()
        if return_past_key_values:
            return logits, out.get("loss"), values, out.get("past_key_values")
        return logits, out.get("loss"), values

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.pretrained_model.generate(*args, **kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        self.pretrained_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs)


def _read_v_head(path: Path) -> dict[str, torch.Tensor]:
    from openformers.core.checkpoint import CheckpointError, find_weight_files, iter_checkpoint

    separate = path / "v_head.safetensors"
    if separate.is_file():
        files = [separate]
    else:
        try:
            files = find_weight_files(path)
        except CheckpointError:  # an adapter directory: no full checkpoint
            return {}
    return {k[len(V_HEAD_PREFIX):]: v for k, v in iter_checkpoint(files) if k.startswith(V_HEAD_PREFIX)}
