"""Helpers for parity tests: build a tiny random model with transformers, save it, load it here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def build_reference(hf_class_name: str, hf_config_name: str, path: Path, seed: int = 0, **config_kw: Any):
    """Create a random ``transformers`` model, save it to ``path`` and return it in eval mode."""
    import transformers

    config = getattr(transformers, hf_config_name)(**config_kw)
    torch.manual_seed(seed)
    model = getattr(transformers, hf_class_name)(config).eval()
    model.save_pretrained(path)
    return model


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, atol: float = 1e-5, mask: torch.Tensor | None = None, what: str = "") -> None:
    """Compare two outputs; ``mask`` ([batch, seq] 1/0) restricts the comparison to real tokens."""
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    if mask is not None:
        keep = mask.bool()
        ours, theirs = ours[keep], theirs[keep]
    diff = (ours.float() - theirs.float()).abs().max().item() if ours.numel() else 0.0
    assert diff <= atol, f"{what}: max abs diff {diff} > {atol}"


def random_batch(vocab_size: int, batch: int = 2, seq: int = 7, pad_last: int = 2, left: bool = False, seed: int = 0):
    """Random ids with the last row padded by ``pad_last`` tokens (left or right)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad_last:
        if left:
            mask[-1, :pad_last] = 0
        else:
            mask[-1, seq - pad_last:] = 0
    return ids, mask
