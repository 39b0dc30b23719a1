"""Adapter state dicts in the peft package's layout.

Saved keys are the ``PeftModel`` parameter names without the adapter name:
``base_model.model.<path>.lora_A.weight`` (from ``...lora_A.<adapter>.weight``), DoRA's
``...lora_magnitude_vector``, IA3's ``...ia3_l``, LoHa's ``...hada_w1_a`` and LoKr's ``...lokr_w1``, a ``modules_to_save`` copy under the original
module's name (``base_model.model.score.weight``), and prompt learning's ``prompt_embeddings``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from openformers.peft.config import WEIGHTS_NAME

if TYPE_CHECKING:
    from openformers.peft.model import PeftModel

# saved key parts that carry an adapter name right after them
ADAPTER_MARKERS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "ia3_l",
                   "lora_E", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b",
                   "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


def _remove_adapter_name(key: str, adapter_name: str) -> str | None:
    """``...lora_A.<adapter>.weight`` -> ``...lora_A.weight``; None if the key is another adapter's."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ADAPTER_MARKERS:
            if parts[i + 1] != adapter_name:
                return None
            return ".".join(parts[: i + 1] + parts[i + 2 :])
    return key


def get_peft_model_state_dict(model: PeftModel, state_dict: dict[str, torch.Tensor] | None = None,
                              adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The tensors of one adapter, keyed as the peft package saves them."""
    config = model.peft_config[adapter_name]
    state_dict = state_dict if state_dict is not None else model.state_dict()
    out: dict[str, torch.Tensor] = {}
    if config.is_prompt_learning:
        with torch.no_grad():
            out["prompt_embeddings"] = model.prompt_encoder[adapter_name].flat_prompt().detach()
    bias = getattr(config, "bias", "none")
    lora_bias_owners = set()
    if bias == "lora_only":
        from openformers.peft.lora import LoraLinear

        lora_bias_owners = {n for n, m in model.named_modules() if isinstance(m, LoraLinear) and adapter_name in m.lora_A}
    for key, value in state_dict.items():
        parts = key.split(".")
        if any(p in ADAPTER_MARKERS for p in parts[:-1]) or parts[-1] in ADAPTER_MARKERS:
            new = _remove_adapter_name(key, adapter_name)
            if new is not None:
                out[new.removesuffix(".weight") if new.endswith("lora_magnitude_vector.weight") else new] = value
        elif f".modules_to_save.{adapter_name}." in key:
            out[key.replace(f".modules_to_save.{adapter_name}.", ".")] = value
        elif ".modules_to_save." in key or ".original_module." in key:
            continue
        elif parts[-1] == "bias" and (bias == "all" or (bias == "lora_only" and key.removesuffix(".base_layer.bias") in lora_bias_owners)):
            out[key] = value
    if config.peft_type == "ADALORA" and config.rank_pattern:
        from openformers.peft.adalora import resize_state_dict_by_rank_pattern

        # saved without pruned ranks; the pattern is recorded with names free of the adapter name
        config.rank_pattern = {k.replace(f".{adapter_name}", ""): v for k, v in config.rank_pattern.items()}
        out = resize_state_dict_by_rank_pattern(out, config.rank_pattern, adapter_name)
    return out


def load_adapter_state(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The adapter's tensors, read by the checkpoint readers (``CheckpointError`` naming the file
    when it is truncated, corrupt or holds pickled objects other than tensors)."""
    from openformers.core.checkpoint import iter_checkpoint, load_bin_file

    directory = Path(directory)
    st = directory / WEIGHTS_NAME
    if st.is_file():
        return dict(iter_checkpoint([st]))
    bin_file = directory / "adapter_model.bin"
    if bin_file.is_file():
        return load_bin_file(bin_file)
    raise FileNotFoundError(f"no {WEIGHTS_NAME} (or adapter_model.bin) in {directory}")


def set_peft_model_state_dict(model: PeftModel, state: dict[str, torch.Tensor], adapter_name: str = "default",
                              source: str = "the adapter") -> None:
    """Load tensors saved in the peft layout into adapter ``adapter_name``; fails loudly on mismatch."""
    from openformers.peft.tuners import ModulesToSaveWrapper

    config = model.peft_config[adapter_name]
    base_name = config.base_model_name_or_path
    if config.is_prompt_learning:
        encoder = model.prompt_encoder[adapter_name]
        if getattr(encoder, "projection", False):
            raise ValueError(
                f"{source}: a prefix-tuning adapter file holds only the projected prefixes, which cannot be turned back "
                "into the table and MLP that prefix_projection=True trains, and the directory has no "
                "prefix_encoder.safetensors (written by openformers next to it); load it with is_trainable=False, "
                "or set prefix_projection=False in its config to train the prefixes directly"
            )
        weight = encoder.embedding.weight
        saved = state.get("prompt_embeddings")
        if saved is None:
            raise ValueError(f"{source}: no 'prompt_embeddings' tensor; keys: {sorted(state)[:5]}")
        if tuple(saved.shape) != tuple(weight.shape):  # a prefix saved for another model
            raise ValueError(
                f"{source} does not fit this model: prompt_embeddings {list(saved.shape)} vs {list(weight.shape)} here "
                f"(adapter made for base_model_name_or_path={base_name!r})"
            )
        with torch.no_grad():
            weight.copy_(saved)
        state = {k: v for k, v in state.items() if k != "prompt_embeddings"}
    if config.peft_type == "ADALORA" and config.rank_pattern:
        model.base_model.resize_modules_by_rank_pattern(config.rank_pattern, adapter_name)
    own = model.state_dict(keep_vars=True)
    wrappers = [n for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper)]
    unexpected, mismatched, loaded = [], [], set()
    for key, value in state.items():
        parts = key.split(".")
        new = key
        for i, part in enumerate(parts):
            if part in ADAPTER_MARKERS:
                new = ".".join(parts[: i + 1] + [adapter_name] + parts[i + 1 :])
                if part == "lora_magnitude_vector" and i == len(parts) - 1:
                    new += ".weight"
                break
        else:
            for w in wrappers:
                if key.startswith(w + "."):
                    new = f"{w}.modules_to_save.{adapter_name}.{key[len(w) + 1:]}"
                    break
        if new not in own:
            unexpected.append(key)
            continue
        if tuple(own[new].shape) != tuple(value.shape):
            mismatched.append(f"{key}: saved {list(value.shape)} vs model {list(own[new].shape)}")
            continue
        with torch.no_grad():
            own[new].copy_(value.to(own[new].dtype))
        loaded.add(new)
    expected = {k for k in own if any(f"{m}.{adapter_name}" in k for m in ADAPTER_MARKERS)}
    missing = sorted(expected - loaded)
    if unexpected or mismatched or missing:
        detail = []
        if mismatched:
            detail.append(f"shape mismatches: {mismatched[:5]}")
        if unexpected:
            detail.append(f"tensors with no place in this model: {unexpected[:5]}")
        if missing:
            detail.append(f"adapter tensors the file lacks: {missing[:5]}")
        raise ValueError(
            f"{source} does not fit {type(model.get_base_model()).__name__}: the adapter was made for "
            f"base_model_name_or_path={base_name!r}. " + "; ".join(detail)
        )
