"""Process-group set-up for the Trainer under ``torchrun``, and unwrapping of wrapped models."""
from __future__ import annotations

import os

import torch
from torch import nn

from openformers.training.arguments import TrainingArguments


def unwrap_model(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(args: TrainingArguments, single_process_group: bool = False) -> bool:
    """Join the torchrun process group; ``single_process_group`` joins it even with one process."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 and not (single_process_group and launched_by_torchrun()):
        return False
    if not torch.distributed.is_initialized():
        backend = args.ddp_backend or ("nccl" if torch.cuda.is_available() and not args.use_cpu else "gloo")
        import datetime

        torch.distributed.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=args.ddp_timeout))
    return True


def distributed_device(args: TrainingArguments) -> torch.device:
    if torch.cuda.is_available() and not args.use_cpu:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")

