"""Collectives over every tensor in a nested structure (``Accelerator.gather``, ``reduce``, ...).

Each takes the run's ``PartialState``; on one process they return their input (``reduce``: a copy).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from openformers.distributed.accelerator_state import PartialState


def gather(state: PartialState, tensor: Any) -> Any:
    """Every process's tensors concatenated along the first dimension (nested structures kept)."""
    if not state.use_distributed:
        return tensor
    return recurse(tensor, lambda t: gather_one(state, t))


def gather_one(state: PartialState, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dim() == 0:
        tensor = tensor[None]
    out = [torch.empty_like(tensor) for _ in range(state.num_processes)]
    torch.distributed.all_gather(out, tensor.contiguous())
    return torch.cat(out, dim=0)


def gather_object(state: PartialState, obj: list[Any]) -> list[Any]:
    if not state.use_distributed:
        return obj
    out: list[Any] = [None] * state.num_processes
    torch.distributed.all_gather_object(out, obj)
    return [x for part in out for x in part]


def reduce(state: PartialState, tensor: Any, reduction: str = "sum", scale: float = 1.0) -> Any:
    """All-reduce (``sum`` or ``mean``) every tensor in ``tensor``; ``none`` returns it as is."""
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"reduce(reduction={reduction!r}): choose 'sum', 'mean' or 'none'")

    def one(t: torch.Tensor) -> torch.Tensor:
        t = t.clone() * scale if scale != 1.0 else t.clone()
        if state.use_distributed and reduction != "none":
            torch.distributed.all_reduce(t)
            if reduction == "mean":
                t = t / state.num_processes
        return t

    return recurse(tensor, one)


def pad_across_processes(state: PartialState, tensor: Any, dim: int = 0, pad_index: int = 0,
                         pad_first: bool = False) -> Any:
    """Pad ``tensor`` along ``dim`` to the largest size any process holds, so it can be gathered."""
    def one(t: torch.Tensor) -> torch.Tensor:
        if not state.use_distributed or t.dim() == 0:
            return t
        size = torch.tensor([t.shape[dim]], device=t.device)
        sizes = gather_one(state, size)
        longest = int(sizes.max())
        if longest == t.shape[dim]:
            return t
        shape = list(t.shape)
        shape[dim] = longest
        out = t.new_full(shape, pad_index)
        index = [slice(None)] * t.dim()
        index[dim] = slice(longest - t.shape[dim], longest) if pad_first else slice(0, t.shape[dim])
        out[tuple(index)] = t
        return out

    return recurse(tensor, one)


def recurse(data: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor in nested dicts, lists, tuples and named tuples."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, Mapping):
        return type(data)({k: recurse(v, fn) for k, v in data.items()}) if not hasattr(data, "data") else {k: recurse(v, fn) for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(recurse(v, fn) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(recurse(v, fn) for v in data)
    return data


def all_tensors(data: Any) -> bool:
    if isinstance(data, torch.Tensor):
        return True
    if isinstance(data, Mapping):
        return all(all_tensors(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return bool(data) and all(all_tensors(v) for v in data)
    return False
