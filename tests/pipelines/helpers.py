"""Comparison helpers for pipeline parity tests."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def assert_same(ours: Any, theirs: Any, atol: float = 1e-4, path: str = "result") -> None:
    """Equal structure, keys, labels and spans; floats within ``atol``."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), f"{path}: expected a tensor, got {type(ours).__name__}"
        assert ours.shape == theirs.shape, f"{path}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
        assert torch.allclose(ours.float(), theirs.float(), atol=atol), f"{path}: tensors differ"
        return
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{path}: expected a dict, got {type(ours).__name__}"
        assert set(ours) == set(theirs), f"{path}: keys {sorted(ours)} != {sorted(theirs)}"
        for k in theirs:
            assert_same(ours[k], theirs[k], atol, f"{path}[{k!r}]")
        return
    if isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)), f"{path}: expected a list, got {type(ours).__name__}"
        assert len(ours) == len(theirs), f"{path}: length {len(ours)} != {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, atol, f"{path}[{i}]")
        return
    if isinstance(theirs, (float, np.floating)):
        assert isinstance(ours, (float, int, np.floating)), f"{path}: expected a number, got {ours!r}"
        assert abs(float(ours) - float(theirs)) <= atol, f"{path}: {ours} != {theirs}"
        return
    if isinstance(theirs, (int, np.integer)) and not isinstance(theirs, bool):
        assert int(ours) == int(theirs), f"{path}: {ours} != {theirs}"
        return
    assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"


def hf_pipeline(*args: Any, **kwargs: Any) -> Any:
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.pipeline(*args, device="cpu", **kwargs)
