"""Where this process stands in a run: ``PartialState`` and ``AcceleratorState`` (Accelerate's names).

``PartialState`` joins the process group ``torchrun`` set up (:mod:`openformers.distributed.state`);
``AcceleratorState`` adds the run's precision and plugins and the ``DistributedType`` they make.
"""
from __future__ import annotations

import contextlib
import enum
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from openformers.distributed import state as dist
from openformers.distributed.data import split_list


class DistributedType(str, enum.Enum):
    NO = "NO"
    MULTI_CPU = "MULTI_CPU"
    MULTI_GPU = "MULTI_GPU"
    FSDP = "FSDP"
    DEEPSPEED = "DEEPSPEED"
    XLA = "XLA"  # never set here: scripts compare against it


@dataclass
class GradientAccumulationPlugin:
    num_steps: int = 1
    adjust_scheduler: bool = True
    sync_with_dataloader: bool = True
    sync_each_batch: bool = False


class PartialState:
    """This process's place in the run: joins the process group ``torchrun`` set up, if any."""

    def __init__(self, cpu: bool = False, **kwargs: Any) -> None:
        cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true")
        self.use_distributed = dist.init_process_group(cpu=cpu, backend=kwargs.get("backend"),
                                                       single_process_group=bool(kwargs.get("single_process_group")))
        self.device = dist.process_device(cpu)
        self.num_processes = dist.world_size()
        self.process_index = dist.rank()
        self.local_process_index = int(os.environ.get("LOCAL_RANK", 0))
        self.num_machines = max(1, self.num_processes // int(os.environ.get("LOCAL_WORLD_SIZE", self.num_processes)))

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    @property
    def is_local_main_process(self) -> bool:
        return self.local_process_index == 0

    @property
    def is_last_process(self) -> bool:
        return self.process_index == self.num_processes - 1

    def wait_for_everyone(self) -> None:
        if self.use_distributed:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_process_first(self) -> Iterator[None]:
        """The main process runs the block first (e.g. to fill a cache), the others after it."""
        if not self.is_main_process:
            self.wait_for_everyone()
        yield
        if self.is_main_process:
            self.wait_for_everyone()

    @contextlib.contextmanager
    def local_main_process_first(self) -> Iterator[None]:
        if not self.is_local_main_process:
            self.wait_for_everyone()
        yield
        if self.is_local_main_process:
            self.wait_for_everyone()

    @contextlib.contextmanager
    def split_between_processes(self, inputs: Any, apply_padding: bool = False) -> Iterator[Any]:
        """This process's contiguous part of a list, tuple, dict of lists or tensor."""
        if self.num_processes == 1:
            yield inputs
            return
        yield split_list(inputs, self.num_processes, self.process_index, apply_padding)

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.is_local_main_process:
            print(*args, **kwargs)

    def on_main_process(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs) if self.is_main_process else None

        return run

    def on_local_main_process(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs) if self.is_local_main_process else None

        return run



class AcceleratorState(PartialState):
    """PartialState plus the run's precision and plugins (``Accelerator.state``)."""

    def __init__(self, cpu: bool = False, mixed_precision: str = "no", fsdp_plugin: Any = None,
                 deepspeed_plugin: Any = None, **kwargs: Any) -> None:
        if fsdp_plugin is not None and not dist.launched_by_torchrun():
            raise ValueError("Accelerator(fsdp_plugin=...) shards the model over processes: start the script with "
                             "`openformers launch --num_processes N script.py` (or torchrun)")
        super().__init__(cpu=cpu, single_process_group=fsdp_plugin is not None, **kwargs)
        self.mixed_precision = mixed_precision
        self.fsdp_plugin = fsdp_plugin
        self.deepspeed_plugin = deepspeed_plugin
        if deepspeed_plugin is not None:
            self.distributed_type = DistributedType.DEEPSPEED
        elif fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
        elif self.use_distributed:
            self.distributed_type = DistributedType.MULTI_GPU if self.device.type == "cuda" else DistributedType.MULTI_CPU
        else:
            self.distributed_type = DistributedType.NO
