"""Process-group set-up for the Trainer: the shared implementation is :mod:`openformers.distributed.state`."""
from __future__ import annotations

import torch

from openformers.distributed.state import init_process_group, launched_by_torchrun, process_device, unwrap_model
from openformers.training.arguments import TrainingArguments

__all__ = ["distributed_device", "init_distributed", "launched_by_torchrun", "unwrap_model"]


def init_distributed(args: TrainingArguments, single_process_group: bool = False) -> bool:
    """Join the torchrun process group; ``single_process_group`` joins it even with one process."""
    return init_process_group(cpu=args.use_cpu, backend=args.ddp_backend, timeout_s=args.ddp_timeout,
                              single_process_group=single_process_group)


def distributed_device(args: TrainingArguments) -> torch.device:
    return process_device(cpu=args.use_cpu)
