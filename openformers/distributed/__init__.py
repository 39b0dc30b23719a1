"""Distributed training: the Accelerator (Accelerate's API), launching, FSDP2 and DeepSpeed.

The Trainer runs on the same machinery (``state``: process group, device, model wrapping and
gradient sync; ``fsdp``: sharding and checkpoint gathering).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Accelerator": "openformers.distributed.accelerator",
    "PartialState": "openformers.distributed.accelerator_state",
    "AcceleratorState": "openformers.distributed.accelerator_state",
    "DistributedType": "openformers.distributed.accelerator_state",
    "GradientAccumulationPlugin": "openformers.distributed.accelerator_state",
    "FullyShardedDataParallelPlugin": "openformers.distributed.fsdp",
    "DeepSpeedPlugin": "openformers.distributed.deepspeed",
    "skip_first_batches": "openformers.distributed.data",
    "set_seed": "openformers.core.seed",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'openformers.distributed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
