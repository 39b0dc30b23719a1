"""Process-group state shared by the Trainer and the Accelerator.

One implementation of: joining the ``torchrun`` process group, picking this process's device,
wrapping a model for data-parallel training (DDP, or FSDP2 when a sharding plan is given),
turning gradient synchronisation off on accumulating micro-batches, and unwrapping.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's model inside DDP / ``torch.compile`` wrappers (an FSDP2 model is its own module)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def init_process_group(*, cpu: bool = False, backend: str | None = None, timeout_s: float = 1800,
                       single_process_group: bool = False) -> bool:
    """Join the process group ``torchrun`` describes in the environment; True when this run is distributed.

    ``single_process_group`` joins it even with one process (FSDP needs a group to shard over)."""
    if env_world_size() <= 1 and not (single_process_group and launched_by_torchrun()):
        return False
    if torch.distributed.is_initialized():
        return True
    if not launched_by_torchrun():
        raise ValueError("WORLD_SIZE > 1 but RANK/MASTER_ADDR/MASTER_PORT are not set: start the script with "
                         "`openformers launch --num_processes N script.py` or torchrun")
    backend = backend or ("nccl" if torch.cuda.is_available() and not cpu else "gloo")
    torch.distributed.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def process_device(cpu: bool = False) -> torch.device:
    """This process's device: its local GPU when there is one (and ``cpu`` is False), else the CPU."""
    if torch.cuda.is_available() and not cpu:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def wrap_model(model: nn.Module, device: torch.device, *, distributed: bool, fsdp_plan: Any = None,
               find_unused_parameters: bool = False, compile_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Wrap ``model`` for training: FSDP2 sharding (``fsdp_plan``), ``torch.compile``, then DDP."""
    if fsdp_plan is not None:
        from openformers.distributed import fsdp

        model = fsdp.shard_model(model, fsdp_plan, device)
    if compile_kwargs is not None:
        model = torch.compile(model, **compile_kwargs)
    if distributed and fsdp_plan is None:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=find_unused_parameters)
    return model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Reduce gradients over processes in this backward only when ``sync`` (accumulating micro-batches
    skip it): DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync``; a no-op for a plain model."""
    from openformers.distributed.fsdp import is_sharded

    inner = unwrap_model(model)
    if hasattr(model, "set_gradient_accumulation_boundary"):  # a DeepSpeed engine: its boundary flag decides
        yield
    elif is_sharded(inner):
        inner.set_requires_gradient_sync(sync)
        yield
    elif not sync and hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def all_reduce_sum(value: float, device: torch.device) -> float:
    """The sum of a Python number over every process (itself when not distributed)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t.item())
