"""``Accelerator``: Accelerate's API for a user's own training loop, on ``torch.distributed``.

The same script runs on one process, on ``n`` processes under ``openformers launch`` / torchrun
(DDP), sharded with FSDP2 (``fsdp_plugin``) or under DeepSpeed ZeRO (``deepspeed_plugin``).
Process-group set-up, model wrapping, gradient sync and full-state gathering are the Trainer's
own (:mod:`openformers.distributed.state`, :mod:`openformers.distributed.fsdp`). The process state
(``PartialState``, ``AcceleratorState``), the optimizer and scheduler wrappers and the collectives
over nested tensors live in ``accelerator_state``, ``optimizer`` and ``collectives``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from openformers.core.seed import set_seed as _set_seed
from openformers.distributed import collectives
from openformers.distributed import fsdp as fsdp_lib
from openformers.distributed import state as dist
from openformers.distributed.accelerator_state import (  # noqa: F401  (public names of this module too)
    AcceleratorState,
    DistributedType,
    GradientAccumulationPlugin,
    PartialState,
)
from openformers.distributed.data import DataLoaderShard, GradientState, send_to_device, skip_first_batches
from openformers.distributed.optimizer import AcceleratedOptimizer, AcceleratedScheduler

MODEL_NAME, OPTIMIZER_NAME, SCHEDULER_NAME, SCALER_NAME = "model", "optimizer", "scheduler", "scaler.pt"
RNG_STATE_NAME, DATALOADER_NAME, SHARDED_MODEL_NAME = "random_states", "dl_state_dict", "pytorch_model_fsdp"
_PRECISIONS = ("no", "fp16", "bf16")


def _autocast_forward(forward: Callable[..., Any], device_type: str, dtype: torch.dtype) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            return forward(*args, **kwargs)

    run._openformers_autocast = True  # type: ignore[attr-defined]
    return run


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


class Accelerator:
    """Runs a PyTorch training loop on one process, data parallel, FSDP2 or DeepSpeed, unchanged.

    ``prepare`` the model, optimizer, data loaders and scheduler; call ``accelerator.backward(loss)``
    instead of ``loss.backward()``; wrap each micro-batch in ``accumulate(model)`` to accumulate
    gradients over ``gradient_accumulation_steps`` batches. Settings left None come from the
    environment ``openformers launch`` (or ``accelerate launch``) sets.
    """

    def __init__(
        self,
        device_placement: bool = True,
        split_batches: bool = False,
        mixed_precision: str | None = None,
        gradient_accumulation_steps: int = 1,
        cpu: bool = False,
        dataloader_config: Any = None,
        deepspeed_plugin: Any = None,
        fsdp_plugin: Any = None,
        rng_types: list[str] | None = None,
        log_with: str | list[str] | None = None,
        project_dir: str | os.PathLike | None = None,
        project_config: Any = None,
        gradient_accumulation_plugin: GradientAccumulationPlugin | None = None,
        step_scheduler_with_optimizer: bool = True,
        kwargs_handlers: list[Any] | None = None,
        dynamo_backend: str | None = None,
        even_batches: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(f"Accelerator() got unknown arguments {sorted(kwargs)}")
        if mixed_precision is None:
            mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        mixed_precision = str(mixed_precision).lower()
        if mixed_precision not in _PRECISIONS:
            raise ValueError(f"mixed_precision={mixed_precision!r}: choose one of {list(_PRECISIONS)}")
        if fsdp_plugin is None and _env_flag("ACCELERATE_USE_FSDP"):
            fsdp_plugin = fsdp_lib.FullyShardedDataParallelPlugin()  # reads FSDP_* from the environment
        if deepspeed_plugin is None and _env_flag("ACCELERATE_USE_DEEPSPEED"):
            from openformers.distributed.deepspeed import DeepSpeedPlugin

            deepspeed_plugin = DeepSpeedPlugin()
        if fsdp_plugin is not None and deepspeed_plugin is not None:
            raise ValueError("Accelerator: give fsdp_plugin or deepspeed_plugin, not both")
        if gradient_accumulation_plugin is not None:
            if gradient_accumulation_steps != 1:
                raise ValueError("give gradient_accumulation_steps or gradient_accumulation_plugin, not both")
            gradient_accumulation_steps = gradient_accumulation_plugin.num_steps
        else:
            gradient_accumulation_steps = int(os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", gradient_accumulation_steps))
            gradient_accumulation_plugin = GradientAccumulationPlugin(num_steps=gradient_accumulation_steps)
        if gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps={gradient_accumulation_steps}: must be >= 1")
        self.state = AcceleratorState(cpu=cpu, mixed_precision=mixed_precision, fsdp_plugin=fsdp_plugin,
                                      deepspeed_plugin=deepspeed_plugin)
        self.device_placement = device_placement
        self.split_batches = split_batches
        self.even_batches = even_batches if dataloader_config is None else getattr(dataloader_config, "even_batches", even_batches)
        if dataloader_config is not None:
            self.split_batches = getattr(dataloader_config, "split_batches", split_batches)
        self.step_scheduler_with_optimizer = step_scheduler_with_optimizer
        self.gradient_state = GradientState(num_steps=gradient_accumulation_steps)
        self._accumulation = gradient_accumulation_plugin
        self.step = 0  # micro-batches seen by accumulate()
        self.scaler: torch.amp.GradScaler | None = None
        if mixed_precision == "fp16" and self.device.type == "cuda" and deepspeed_plugin is None:
            self.scaler = torch.amp.GradScaler("cuda")
        if mixed_precision == "fp16" and self.device.type == "cpu":
            warnings.warn("mixed_precision='fp16' on CPU: running bfloat16 autocast instead (float16 on CPU is slow "
                          "and needs loss scaling)", stacklevel=2)
        self.project_dir = Path(project_dir if project_dir is not None else getattr(project_config, "project_dir", None) or ".")
        self.log_with = [log_with] if isinstance(log_with, str) else list(log_with or [])
        self.trackers: list[Any] = []
        self._models: list[nn.Module] = []
        self._optimizers: list[AcceleratedOptimizer] = []
        self._schedulers: list[AcceleratedScheduler] = []
        self._dataloaders: list[DataLoaderShard] = []
        self._custom_objects: list[Any] = []
        self._param_names: dict[int, tuple[int, str]] = {}  # id of a parameter before sharding -> (model, name)
        self._save_iteration = 0
        self._loader_seed: int | None = None
        self.deepspeed_engine: Any = None
        self._dynamo_backend = dynamo_backend or os.environ.get("ACCELERATE_DYNAMO_BACKEND")
        if self._dynamo_backend and self._dynamo_backend.lower() == "no":
            self._dynamo_backend = None

    # -- where this process stands ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.state.device

    @property
    def distributed_type(self) -> DistributedType:
        return self.state.distributed_type

    @property
    def num_processes(self) -> int:
        return self.state.num_processes

    @property
    def process_index(self) -> int:
        return self.state.process_index

    @property
    def local_process_index(self) -> int:
        return self.state.local_process_index

    @property
    def use_distributed(self) -> bool:
        return self.state.use_distributed

    @property
    def is_main_process(self) -> bool:
        return self.state.is_main_process

    @property
    def is_local_main_process(self) -> bool:
        return self.state.is_local_main_process

    @property
    def is_last_process(self) -> bool:
        return self.state.is_last_process

    @property
    def mixed_precision(self) -> str:
        return self.state.mixed_precision

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.gradient_state.num_steps

    @gradient_accumulation_steps.setter
    def gradient_accumulation_steps(self, value: int) -> None:
        self.gradient_state.num_steps = int(value)

    @property
    def sync_gradients(self) -> bool:
        return self.gradient_state.sync_gradients

    @property
    def optimizer_step_was_skipped(self) -> bool:
        return any(o.step_was_skipped for o in self._optimizers)

    @property
    def fsdp_plugin(self) -> Any:
        return self.state.fsdp_plugin

    @property
    def deepspeed_plugin(self) -> Any:
        return self.state.deepspeed_plugin

    def wait_for_everyone(self) -> None:
        self.state.wait_for_everyone()

    def main_process_first(self) -> contextlib.AbstractContextManager:
        return self.state.main_process_first()

    def local_main_process_first(self) -> contextlib.AbstractContextManager:
        return self.state.local_main_process_first()

    def split_between_processes(self, inputs: Any, apply_padding: bool = False) -> contextlib.AbstractContextManager:
        return self.state.split_between_processes(inputs, apply_padding)

    def print(self, *args: Any, **kwargs: Any) -> None:
        self.state.print(*args, **kwargs)

    def on_main_process(self, function: Callable[..., Any]) -> Callable[..., Any]:
        return self.state.on_main_process(function)

    def on_local_main_process(self, function: Callable[..., Any]) -> Callable[..., Any]:
        return self.state.on_local_main_process(function)

    # -- prepare --------------------------------------------------------------------------------
    def prepare(self, *args: Any, device_placement: list[bool] | None = None) -> Any:
        """Prepare models, optimizers, data loaders, schedulers (and tensors) for this run, in the order given."""
        if device_placement is not None and len(device_placement) != len(args):
            raise ValueError(f"prepare(): device_placement has {len(device_placement)} entries for {len(args)} objects")
        placement = device_placement or [self.device_placement] * len(args)
        if self.deepspeed_plugin is not None:
            from openformers.distributed.deepspeed import prepare_deepspeed

            result = prepare_deepspeed(self, list(args))
            return result[0] if len(result) == 1 else tuple(result)
        # models first: sharding replaces parameters that optimizers hold (remembered across calls, so
        # an optimizer prepared after its model finds the sharded parameters too)
        result: list[Any] = list(args)
        for i, obj in enumerate(args):
            if isinstance(obj, nn.Module):
                self._param_names.update({id(p): (len(self._models), n) for n, p in obj.named_parameters()})
                result[i] = self.prepare_model(obj, device_placement=placement[i])
        for i, obj in enumerate(args):
            if isinstance(obj, torch.optim.Optimizer):
                if self.fsdp_plugin is not None:
                    self._repoint_optimizer(obj, self._param_names)
                result[i] = self.prepare_optimizer(obj, device_placement=placement[i])
        for i, obj in enumerate(args):
            if isinstance(obj, DataLoader):
                result[i] = self.prepare_data_loader(obj, device_placement=placement[i])
            elif isinstance(obj, torch.Tensor):
                result[i] = send_to_device(obj, self.device) if placement[i] else obj
        for i, obj in enumerate(args):
            if _is_scheduler(obj):
                result[i] = self.prepare_scheduler(obj)
        return result[0] if len(result) == 1 else tuple(result)

    def _repoint_optimizer(self, optimizer: torch.optim.Optimizer, names: dict[int, tuple[int, str]]) -> None:
        """After sharding: the optimizer's parameters are the sharded model's parameters of the same names."""
        for group in optimizer.param_groups:
            new = []
            for p in group["params"]:
                if id(p) not in names:
                    new.append(p)
                    continue
                index, name = names[id(p)]
                new.append(dict(dist.unwrap_model(self._models[index]).named_parameters())[name])
            group["params"] = new

    def prepare_model(self, model: nn.Module, device_placement: bool | None = None, evaluation_mode: bool = False) -> nn.Module:
        placement = self.device_placement if device_placement is None else device_placement
        if placement and getattr(model, "hf_device_map", None) is None:
            model = model.to(self.device)
        plan = None
        if self.fsdp_plugin is not None and not evaluation_mode:
            plan = self.fsdp_plugin.to_plan(bf16=self.mixed_precision == "bf16")
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16 if self.device.type == "cuda" else torch.bfloat16}.get(self.mixed_precision)
        if autocast_dtype is not None and plan is None and not getattr(model.forward, "_openformers_autocast", False):
            model.forward = _autocast_forward(model.forward, self.device.type, autocast_dtype)
        compile_kwargs = {"backend": self._dynamo_backend.lower()} if self._dynamo_backend else None
        wrapped = dist.wrap_model(model, self.device, distributed=self.use_distributed and not evaluation_mode,
                                  fsdp_plan=plan, compile_kwargs=compile_kwargs)
        self._models.append(wrapped)
        return wrapped

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer, device_placement: bool | None = None) -> AcceleratedOptimizer:
        if isinstance(optimizer, AcceleratedOptimizer):
            return optimizer
        wrapped = AcceleratedOptimizer(optimizer, self.gradient_state, self.scaler)
        self._optimizers.append(wrapped)
        return wrapped

    def prepare_scheduler(self, scheduler: Any) -> AcceleratedScheduler:
        if isinstance(scheduler, AcceleratedScheduler):
            return scheduler
        optimizer = scheduler.optimizer
        ours = [o for o in self._optimizers if o.optimizer is optimizer or o is optimizer]
        wrapped = AcceleratedScheduler(scheduler, ours or self._optimizers, self.gradient_state, self.num_processes,
                                       step_with_optimizer=self.step_scheduler_with_optimizer, split_batches=self.split_batches)
        self._schedulers.append(wrapped)
        return wrapped

    def prepare_data_loader(self, data_loader: DataLoader, device_placement: bool | None = None) -> DataLoaderShard:
        if isinstance(data_loader, DataLoaderShard):
            return data_loader
        placement = self.device_placement if device_placement is None else device_placement
        num, rank = self.num_processes, self.process_index
        if self.split_batches:
            size = data_loader.batch_size or getattr(data_loader.batch_sampler, "batch_size", 0)
            if size % num:
                raise ValueError(f"split_batches=True: the DataLoader's batch_size {size} must be a multiple of the "
                                 f"{num} processes")
        loader = DataLoaderShard(data_loader, num_processes=num, process_index=rank,
                                 device=self.device if placement else None, gradient_state=self.gradient_state,
                                 seed=self._shared_loader_seed(), even_batches=self.even_batches,
                                 split_batches=self.split_batches)
        self._dataloaders.append(loader)
        return loader

    def _shared_loader_seed(self) -> int:
        """One seed for every shuffled loader's permutations, drawn once on the main process."""
        if self._loader_seed is None:
            seed = torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64)
            if self.use_distributed:
                seed = seed.to(self.device)
                torch.distributed.broadcast(seed, src=0)
            self._loader_seed = int(seed.item())
        return self._loader_seed

    def skip_first_batches(self, dataloader: Any, num_batches: int = 0) -> Any:
        return skip_first_batches(dataloader, num_batches)

    # -- training step ----------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward()``, divided by the accumulation steps and scaled for fp16 as needed."""
        if self.deepspeed_engine is not None:  # the engine divides by its accumulation steps itself
            self.deepspeed_engine.backward(loss, **kwargs)
            self.deepspeed_engine.step()  # the engine applies the update at accumulation boundaries
            return
        if self.gradient_accumulation_steps > 1:
            loss = loss / self.gradient_accumulation_steps
        if self.scaler is not None:
            self.scaler.scale(loss).backward(**kwargs)
        else:
            loss.backward(**kwargs)

    def _do_sync(self) -> None:
        if self._accumulation.sync_with_dataloader and self.gradient_state.end_of_dataloader:
            self.step = 0
            self.gradient_state.sync_gradients = True
            return
        self.step += 1
        self.gradient_state.sync_gradients = self._accumulation.sync_each_batch or self.step % self.gradient_accumulation_steps == 0

    @contextlib.contextmanager
    def accumulate(self, *models: nn.Module) -> Iterator[None]:
        """One micro-batch: gradients are reduced over processes (and the optimizer steps) only every
        ``gradient_accumulation_steps`` batches, and at the end of the data loader."""
        self._do_sync()
        with contextlib.ExitStack() as stack:
            for model in models:
                stack.enter_context(self.no_sync(model) if not self.sync_gradients else contextlib.nullcontext())
            yield

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module) -> Iterator[None]:
        """Backward passes in the block keep their gradients on this process (no all-reduce)."""
        if self.deepspeed_engine is not None or not self.use_distributed:
            yield
            return
        with dist.gradient_sync(model, False):
            yield
        if fsdp_lib.is_sharded(dist.unwrap_model(model)):
            dist.unwrap_model(model).set_requires_gradient_sync(True)

    def autocast(self, autocast_handler: Any = None) -> contextlib.AbstractContextManager:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16 if self.device.type == "cuda" else torch.bfloat16}.get(self.mixed_precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        if self.scaler is None:
            return
        for opt in [optimizer] if optimizer is not None else self._optimizers:
            inner = opt.optimizer if isinstance(opt, AcceleratedOptimizer) else opt
            self.scaler.unscale_(inner)

    def clip_grad_norm_(self, parameters: Any, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip the gradients' total norm (over every process's shards); returns the norm before."""
        if self.deepspeed_engine is not None:  # the engine clips with its config's gradient_clipping
            norm = self.deepspeed_engine.get_global_grad_norm()
            return torch.as_tensor(float(norm)) if norm is not None else None
        self.unscale_gradients()
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type=norm_type)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def clip_grad_value_(self, parameters: Any, clip_value: float) -> None:
        self.unscale_gradients()
        torch.nn.utils.clip_grad_value_(parameters, clip_value)

    # -- collectives ----------------------------------------------------------------------------
    def gather(self, tensor: Any) -> Any:
        """Every process's tensors concatenated along the first dimension (nested structures kept)."""
        return collectives.gather(self.state, tensor)

    def gather_for_metrics(self, input_data: Any, use_gather_object: bool = False) -> Any:
        """``gather``, less the samples repeated to even out the last batch: over a whole evaluation
        loader, exactly the dataset's samples, in order."""
        tensors = collectives.all_tensors(input_data)
        if use_gather_object or not tensors:
            data = self.gather_object(input_data if isinstance(input_data, list) else [input_data])
        else:
            data = self.gather(input_data)
        remainder = self.gradient_state.remainder
        if not self.use_distributed or not self.gradient_state.end_of_dataloader or remainder <= 0:
            return data
        return collectives.recurse(data, lambda t: t[:remainder]) if not isinstance(data, list) or tensors else data[:remainder]

    def gather_object(self, obj: list[Any]) -> list[Any]:
        return collectives.gather_object(self.state, obj)

    def reduce(self, tensor: Any, reduction: str = "sum", scale: float = 1.0) -> Any:
        """All-reduce (``sum`` or ``mean``) every tensor in ``tensor``; ``none`` returns it as is."""
        return collectives.reduce(self.state, tensor, reduction, scale)

    def pad_across_processes(self, tensor: Any, dim: int = 0, pad_index: int = 0, pad_first: bool = False) -> Any:
        """Pad ``tensor`` along ``dim`` to the largest size any process holds, so it can be gathered."""
        return collectives.pad_across_processes(self.state, tensor, dim, pad_index, pad_first)

    # -- models ---------------------------------------------------------------------------------
    def unwrap_model(self, model: nn.Module, keep_fp32_wrapper: bool = True, keep_torch_compile: bool = True) -> nn.Module:
        inner = dist.unwrap_model(model)
        if not keep_fp32_wrapper and getattr(inner.forward, "_openformers_autocast", False):
            del inner.forward  # the class's forward again
        return inner

    def get_state_dict(self, model: nn.Module, unwrap: bool = True) -> dict[str, torch.Tensor]:
        """The full state dict (gathered from the shards under FSDP; on the main process). Every process calls it."""
        inner = dist.unwrap_model(model)
        if fsdp_lib.is_sharded(inner):
            return fsdp_lib.full_model_state(inner)
        if self.deepspeed_engine is not None:
            from openformers.distributed.deepspeed import full_state_dict

            return full_state_dict(self.deepspeed_engine)
        return inner.state_dict()

    def save_model(self, model: nn.Module, save_directory: str | os.PathLike, max_shard_size: int | str = "10GB",
                   safe_serialization: bool = True) -> None:
        """Write the full model's weights on the main process: safetensors, sharded above ``max_shard_size``."""
        from openformers.core.checkpoint import save_state_dict

        state = self.get_state_dict(model)
        if self.is_main_process:
            directory = Path(save_directory)
            if directory.is_file():
                raise ValueError(f"save_model: {directory} is a file; give a directory")
            # tied weights (shared storage) are written once, under their first name, as Accelerate does
            seen: set[tuple[int, int]] = set()
            unique: dict[str, torch.Tensor] = {}
            for k, v in state.items():
                key = (v.untyped_storage().data_ptr(), v.storage_offset())
                if key not in seen:
                    seen.add(key)
                    unique[k] = v.contiguous()
            save_state_dict(unique, directory, max_shard_size=max_shard_size,
                            safe_serialization=safe_serialization)
        self.wait_for_everyone()

    def save(self, obj: Any, f: str | os.PathLike, safe_serialization: bool = False) -> None:
        """Write ``obj`` once, from the main process (``torch.save``; safetensors for a state dict when asked)."""
        if not self.is_main_process:
            return
        if safe_serialization:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in obj.items()}, str(f), metadata={"format": "pt"})
        else:
            torch.save(obj, f)

    def free_memory(self, *objects: Any) -> list[Any]:
        self._models.clear()
        self._optimizers.clear()
        self._schedulers.clear()
        self._dataloaders.clear()
        self.deepspeed_engine = None
        return [None] * len(objects)

    def register_for_checkpointing(self, *objects: Any) -> None:
        bad = [type(o).__name__ for o in objects if not (hasattr(o, "state_dict") and hasattr(o, "load_state_dict"))]
        if bad:
            raise ValueError(f"register_for_checkpointing: {bad} have no state_dict/load_state_dict")
        self._custom_objects.extend(objects)

    # -- state ----------------------------------------------------------------------------------
    def save_state(self, output_dir: str | os.PathLike | None = None, safe_serialization: bool = True) -> str:
        """Save models, optimizers, schedulers, scaler, data loader positions and every process's RNG,
        so ``load_state`` resumes the run exactly. Sharded (FSDP) models write a distributed checkpoint
        that loads on any number of processes."""
        from openformers.distributed import checkpoint

        if not self.sync_gradients:
            warnings.warn("save_state() between optimizer updates (accumulating gradients): the gradients accumulated "
                          "since the last update are not saved, so a resumed run differs; save after optimizer.step()",
                          stacklevel=2)
        if output_dir is None:
            output_dir = self.project_dir / "checkpoints" / f"checkpoint_{self._save_iteration}"
        path = checkpoint.save_accelerator_state(self, Path(output_dir), safe_serialization)
        self._save_iteration += 1
        return str(path)

    def load_state(self, input_dir: str | os.PathLike | None = None, **load_model_kwargs: Any) -> None:
        from openformers.distributed import checkpoint

        if input_dir is None:
            root = self.project_dir / "checkpoints"
            found = sorted(root.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[-1])) if root.is_dir() else []
            if not found:
                raise ValueError(f"load_state(): no input_dir given and no checkpoint under {root}")
            input_dir = found[-1]
        checkpoint.load_accelerator_state(self, Path(input_dir))

    # -- trackers -------------------------------------------------------------------------------
    def init_trackers(self, project_name: str, config: dict[str, Any] | None = None,
                      init_kwargs: dict[str, Any] | None = None) -> None:
        """Open the trackers named by ``log_with`` (TensorBoard, W&B, MLflow, Comet) on the main process."""
        from openformers.distributed.tracking import open_trackers

        if self.is_main_process:
            self.trackers = open_trackers(self.log_with, project_name, self.project_dir, config, init_kwargs or {})

    def get_tracker(self, name: str, unwrap: bool = False) -> Any:
        for tracker in self.trackers:
            if tracker.name == name:
                return tracker.writer if unwrap else tracker
        raise ValueError(f"no tracker {name!r}; open trackers: {[t.name for t in self.trackers]}")

    def log(self, values: dict[str, Any], step: int | None = None, log_kwargs: dict[str, Any] | None = None) -> None:
        for tracker in self.trackers:
            tracker.log(values, step)

    def end_training(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
        self.wait_for_everyone()

    def set_seed(self, seed: int, device_specific: bool = False, deterministic: bool = False) -> None:
        set_seed(seed + (self.process_index if device_specific else 0), deterministic=deterministic)


def set_seed(seed: int, device_specific: bool = False, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; ``device_specific`` adds this process's rank."""
    _set_seed(seed + (dist.rank() if device_specific else 0), deterministic=deterministic)


def _is_scheduler(obj: Any) -> bool:
    return isinstance(obj, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)) or (
        hasattr(obj, "step") and hasattr(obj, "optimizer") and hasattr(obj, "state_dict") and not isinstance(obj, torch.optim.Optimizer))
