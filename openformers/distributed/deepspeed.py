"""DeepSpeed ZeRO (stages 1-3, CPU offload of optimizer and parameters) for the Accelerator and the Trainer.

The ``deepspeed`` package is an optional extra (``pip install 'openformers[deepspeed]'``); this
module only reads configs until a run starts. A DeepSpeed config (a JSON file or a dict) may say
``"auto"`` for values the run already knows; they are filled as transformers and Accelerate fill
them: batch sizes and accumulation steps from the training arguments or the prepared data loader,
the optimizer's and scheduler's settings, mixed precision, gradient clipping, and ZeRO bucket sizes
from the model's hidden size. A value set in both places and different is an error naming both.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from openformers.distributed.accelerator import Accelerator

ENGINE_TAG = "pytorch_model"  # the tag Accelerate saves DeepSpeed checkpoints under


def require_deepspeed() -> Any:
    """The ``deepspeed`` module, or an error saying how to install it."""
    if importlib.util.find_spec("deepspeed") is None:
        raise ImportError("DeepSpeed training needs the 'deepspeed' package: pip install 'openformers[deepspeed]' "
                          "(or pip install deepspeed)")
    import deepspeed

    return deepspeed


def read_config(config: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """A DeepSpeed config from a dict, a JSON file, or a JSON string."""
    if isinstance(config, dict):
        return copy.deepcopy(config)
    text = str(config)
    path = Path(text)
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"deepspeed config {path}: not valid JSON ({exc})") from exc
    if text.lstrip().startswith("{"):
        return json.loads(text)
    raise ValueError(f"deepspeed={text!r}: neither a dict, a JSON file nor a JSON string")


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def fill(config: dict[str, Any], values: dict[str, Any], *, source: str, must_match: bool = True) -> dict[str, Any]:
    """Replace ``"auto"`` at each dotted key of ``values``; with ``must_match``, a value given in the
    config that differs from the run's is an error. Keys absent from the config are left out."""
    mismatches = []
    for key, value in values.items():
        current = _get(config, key)
        if current is None or value is None:
            continue
        if current == "auto":
            _set(config, key, value)
        elif must_match and current != value and not (isinstance(value, float) and isinstance(current, (int, float))
                                                      and abs(current - value) <= 1e-12 * max(1.0, abs(value))):
            mismatches.append(f"- ds {key}={current!r} vs {source} {value!r}")
    if mismatches:
        raise ValueError("the DeepSpeed config disagrees with the " + source + " (set them to \"auto\" or make them "
                         "equal):\n" + "\n".join(mismatches))
    return config


def _check_no_auto(config: dict[str, Any], where: str = "") -> None:
    for key, value in config.items():
        name = f"{where}.{key}" if where else key
        if isinstance(value, dict):
            _check_no_auto(value, name)
        elif value == "auto":
            raise ValueError(f"DeepSpeed config {name}=\"auto\": nothing in this run sets it; give a value")


def _zero_sizes(config: dict[str, Any], model: nn.Module | None) -> dict[str, Any]:
    config_ = getattr(model, "config", None)
    hidden = getattr(config_, "hidden_size", None) or max(getattr(config_, "hidden_sizes", [0]) or [0]) or None
    if not hidden:
        return {}
    return {"zero_optimization.reduce_bucket_size": hidden * hidden,
            "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
            "zero_optimization.stage3_param_persistence_threshold": 10 * hidden}


def trainer_config(config: str | os.PathLike | dict[str, Any], args: Any, *, world_size: int, num_training_steps: int,
                   model: nn.Module | None = None) -> dict[str, Any]:
    """The DeepSpeed config of a Trainer run: ``"auto"`` filled from ``TrainingArguments`` (transformers' rules)."""
    ds = read_config(config)
    micro, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    use_cpu = bool(getattr(args, "use_cpu", False)) or not torch.cuda.is_available()
    values: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world_size,
        "gradient_clipping": args.max_grad_norm,
        "optimizer.params.lr": args.learning_rate,
        "optimizer.params.betas": [args.adam_beta1, args.adam_beta2],
        "optimizer.params.eps": args.adam_epsilon,
        "optimizer.params.weight_decay": args.weight_decay,
        "scheduler.params.warmup_min_lr": 0,
        "scheduler.params.warmup_max_lr": args.learning_rate,
        "scheduler.params.warmup_num_steps": args.get_warmup_steps(num_training_steps),
        "scheduler.params.total_num_steps": num_training_steps,
        "fp16.enabled": bool(args.fp16) and not use_cpu,
        "bf16.enabled": bool(args.bf16 or (args.fp16 and use_cpu)),
    }
    fill(ds, values, source="TrainingArguments")
    fill(ds, _zero_sizes(ds, model), source="model", must_match=False)
    ds.setdefault("train_micro_batch_size_per_gpu", micro)
    ds.setdefault("gradient_accumulation_steps", accum)
    ds.setdefault("gradient_clipping", args.max_grad_norm)
    ds.setdefault("steps_per_print", 10**9)
    if args.bf16 and "bf16" not in ds and "fp16" not in ds:
        ds["bf16"] = {"enabled": True}
    if args.fp16 and not use_cpu and "fp16" not in ds and "bf16" not in ds:
        ds["fp16"] = {"enabled": True}
    ds.pop("train_batch_size", None) if ds.get("train_batch_size") == "auto" else None
    _check_no_auto(ds)
    return ds


@dataclass
class DeepSpeedPlugin:
    """DeepSpeed settings for the Accelerator (Accelerate's names). ``hf_ds_config`` is a DeepSpeed
    config (file, dict or JSON); without one, a config is built from ``zero_stage``,
    ``offload_optimizer_device``, ``offload_param_device`` and ``gradient_clipping``. Fields left None
    come from the ``ACCELERATE_DEEPSPEED_*`` variables ``openformers launch`` sets."""

    hf_ds_config: Any = None
    gradient_accumulation_steps: int | None = None
    gradient_clipping: float | None = None
    zero_stage: int | None = None
    offload_optimizer_device: str | None = None
    offload_param_device: str | None = None
    zero3_init_flag: bool | None = None
    zero3_save_16bit_model: bool | None = None

    def __post_init__(self) -> None:
        env = os.environ.get
        if self.hf_ds_config is None:
            self.hf_ds_config = env("ACCELERATE_DEEPSPEED_CONFIG_FILE") or None
        if self.gradient_accumulation_steps is None and env("ACCELERATE_GRADIENT_ACCUMULATION_STEPS"):
            self.gradient_accumulation_steps = int(env("ACCELERATE_GRADIENT_ACCUMULATION_STEPS"))
        if self.gradient_clipping is None and env("ACCELERATE_GRADIENT_CLIPPING") not in (None, "none"):
            self.gradient_clipping = float(env("ACCELERATE_GRADIENT_CLIPPING"))
        if self.zero_stage is None:
            self.zero_stage = int(env("ACCELERATE_DEEPSPEED_ZERO_STAGE", 2))
        if self.offload_optimizer_device is None:
            self.offload_optimizer_device = env("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none")
        if self.offload_param_device is None:
            self.offload_param_device = env("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none")
        if self.zero3_save_16bit_model is None:
            self.zero3_save_16bit_model = env("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "false").lower() == "true"
        for name in ("offload_optimizer_device", "offload_param_device"):
            if getattr(self, name) not in ("none", "cpu", "nvme"):
                raise ValueError(f"DeepSpeedPlugin({name}={getattr(self, name)!r}): choose 'none', 'cpu' or 'nvme'")
        if self.hf_ds_config is not None:
            self.deepspeed_config = read_config(self.hf_ds_config)
        else:
            if self.zero_stage not in (0, 1, 2, 3):
                raise ValueError(f"DeepSpeedPlugin(zero_stage={self.zero_stage}): choose 0, 1, 2 or 3")
            zero: dict[str, Any] = {"stage": self.zero_stage}
            if self.offload_optimizer_device != "none":
                zero["offload_optimizer"] = {"device": self.offload_optimizer_device}
            if self.offload_param_device != "none":
                if self.zero_stage != 3:
                    raise ValueError("DeepSpeedPlugin(offload_param_device=...) offloads parameters, which only ZeRO "
                                     "stage 3 partitions; set zero_stage=3")
                zero["offload_param"] = {"device": self.offload_param_device}
            if self.zero_stage == 3:
                zero["stage3_gather_16bit_weights_on_model_save"] = bool(self.zero3_save_16bit_model)
            self.deepspeed_config = {
                "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": self.gradient_accumulation_steps or "auto",
                "gradient_clipping": self.gradient_clipping if self.gradient_clipping is not None else "auto",
                "zero_optimization": zero, "steps_per_print": 10**9,
            }

    @property
    def zero_stage_of_config(self) -> int:
        return int(_get(self.deepspeed_config, "zero_optimization.stage") or 0)


def accelerator_config(plugin: DeepSpeedPlugin, acc: "Accelerator", *, batch_size: int | None,
                       optimizer: torch.optim.Optimizer | None, model: nn.Module | None) -> dict[str, Any]:
    """The plugin's config with ``"auto"`` filled from the Accelerator, its data loader and optimizer."""
    ds = copy.deepcopy(plugin.deepspeed_config)
    accum = acc.gradient_accumulation_steps
    values: dict[str, Any] = {"gradient_accumulation_steps": accum}
    if batch_size is not None:
        values["train_micro_batch_size_per_gpu"] = batch_size
        values["train_batch_size"] = batch_size * accum * acc.num_processes
    if optimizer is not None:
        d = optimizer.defaults
        values.update({"optimizer.params.lr": d.get("lr"), "optimizer.params.weight_decay": d.get("weight_decay"),
                       "optimizer.params.eps": d.get("eps"),
                       "optimizer.params.betas": list(d["betas"]) if "betas" in d else None,
                       "scheduler.params.warmup_min_lr": 0, "scheduler.params.warmup_max_lr": d.get("lr")})
    fill(ds, values, source="Accelerator settings")
    fill(ds, {"gradient_clipping": 1.0}, source="default", must_match=False) if ds.get("gradient_clipping") == "auto" else None
    fill(ds, _zero_sizes(ds, model), source="model", must_match=False)
    precision = acc.mixed_precision
    on_cpu = acc.device.type == "cpu"
    if precision == "bf16" or (precision == "fp16" and on_cpu):
        ds.setdefault("bf16", {"enabled": True})
    elif precision == "fp16":
        ds.setdefault("fp16", {"enabled": True})
    for section in ("fp16", "bf16"):
        if _get(ds, f"{section}.enabled") == "auto":
            _set(ds, f"{section}.enabled", (precision == section) and not (section == "fp16" and on_cpu))
    if ds.get("train_batch_size") == "auto" and batch_size is None:
        raise ValueError("DeepSpeed config train_micro_batch_size_per_gpu/train_batch_size are \"auto\" but prepare() "
                         "got no DataLoader to read the batch size from; give the values in the config")
    ds.setdefault("steps_per_print", 10**9)
    _check_no_auto(ds)
    return ds


class DeepSpeedOptimizerWrapper(torch.optim.Optimizer):
    """The optimizer under DeepSpeed: the engine steps and zeroes it in ``Accelerator.backward``."""

    def __init__(self, optimizer: Any, engine: Any) -> None:
        self.optimizer, self.engine = optimizer, engine

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return getattr(self.optimizer, "defaults", {})

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass  # the engine zeroes gradients after its step

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        pass  # the engine stepped in backward

    @property
    def step_was_skipped(self) -> bool:
        return bool(getattr(self.optimizer, "overflow", False))

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)


class DeepSpeedSchedulerWrapper:
    """A scheduler the engine steps itself: ``step`` is a no-op."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def step(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)


def prepare_deepspeed(acc: "Accelerator", objects: list[Any]) -> list[Any]:
    """``Accelerator.prepare`` under DeepSpeed: one model (with its optimizer and scheduler) becomes an engine."""
    from torch.utils.data import DataLoader

    from openformers.distributed.accelerator import _is_scheduler

    deepspeed = require_deepspeed()
    result = list(objects)
    models = [i for i, o in enumerate(objects) if isinstance(o, nn.Module)]
    optimizers = [i for i, o in enumerate(objects) if isinstance(o, torch.optim.Optimizer)]
    schedulers = [i for i, o in enumerate(objects) if _is_scheduler(o)]
    if len(models) > 1 or len(optimizers) > 1 or len(schedulers) > 1:
        raise ValueError("DeepSpeed: prepare() takes one model, one optimizer and one scheduler")
    batch_size = None
    for i, obj in enumerate(objects):
        if isinstance(obj, DataLoader):
            result[i] = acc.prepare_data_loader(obj)
            if batch_size is None:
                batch_size = result[i].batch_size
        elif isinstance(obj, torch.Tensor):
            result[i] = obj.to(acc.device)
    if not models:
        return result
    model = objects[models[0]]
    optimizer = objects[optimizers[0]] if optimizers else None
    scheduler = objects[schedulers[0]] if schedulers else None
    config = accelerator_config(acc.deepspeed_plugin, acc, batch_size=batch_size, optimizer=optimizer, model=model)
    if "optimizer" in config:
        optimizer = None  # the config's optimizer (its "auto" settings read from the user's)
    if "scheduler" in config:
        scheduler = None
    if scheduler is not None and optimizer is None:
        raise ValueError("DeepSpeed: the config builds its own optimizer, so a torch scheduler has no optimizer to "
                         "drive; give the scheduler in the config too")
    if optimizer is not None:
        config.setdefault("zero_allow_untested_optimizer", True)
    if not acc.use_distributed:
        deepspeed.init_distributed(dist_backend="gloo" if acc.device.type == "cpu" else None)
    engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
        model=model.to(acc.device), optimizer=optimizer, lr_scheduler=scheduler, config=config,
        model_parameters=[p for p in model.parameters() if p.requires_grad] if optimizer is None else None,
        dist_init_required=False)
    acc.deepspeed_engine = engine
    acc._models.append(engine)
    result[models[0]] = engine
    if optimizers:
        result[optimizers[0]] = DeepSpeedOptimizerWrapper(ds_optimizer, engine)
    if schedulers:
        result[schedulers[0]] = DeepSpeedSchedulerWrapper(ds_scheduler if ds_scheduler is not None else objects[schedulers[0]])
    return result


def full_state_dict(engine: Any) -> dict[str, torch.Tensor]:
    """The whole model's weights (gathered from ZeRO-3 partitions onto the main process); every process calls it."""
    if engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
        return state if state is not None else {}
    return engine.module.state_dict()


def save_engine_state(acc: "Accelerator", directory: Path) -> None:
    """The engine's own checkpoint (model, optimizer and scheduler, each process its partitions)."""
    acc.deepspeed_engine.save_checkpoint(str(directory), tag=ENGINE_TAG)


def load_engine_state(acc: "Accelerator", directory: Path) -> None:
    if not (directory / ENGINE_TAG).is_dir():
        raise ValueError(f"load_state: {directory} has no DeepSpeed checkpoint ({ENGINE_TAG}/)")
    path, _ = acc.deepspeed_engine.load_checkpoint(str(directory), tag=ENGINE_TAG)
    if path is None:
        raise ValueError(f"load_state: DeepSpeed could not load the checkpoint in {directory / ENGINE_TAG}")


def trainer_engine(trainer: Any, num_training_steps: int) -> Any:
    """Start the Trainer's DeepSpeed engine: the config's optimizer and scheduler, else the Trainer's own
    (created here); sets ``trainer.optimizer`` / ``trainer.lr_scheduler`` to what the engine steps."""
    from openformers.distributed.state import unwrap_model, world_size

    deepspeed = require_deepspeed()
    config = trainer_config(trainer.args.deepspeed, trainer.args, world_size=world_size(),
                            num_training_steps=num_training_steps, model=unwrap_model(trainer.model))
    optimizer = None if "optimizer" in config else trainer.create_optimizer()
    scheduler: Any = None
    if "scheduler" not in config:
        if optimizer is not None:
            scheduler = trainer.create_scheduler(num_training_steps, optimizer)
        else:  # the config's optimizer with the Trainer's schedule
            scheduler = lambda opt: trainer.create_scheduler(num_training_steps, opt)  # noqa: E731
    if optimizer is not None:  # a torch optimizer of the run's own choosing, as transformers allows
        config.setdefault("zero_allow_untested_optimizer", True)
    engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
        model=trainer.model, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=False,
        model_parameters=[p for p in trainer.model.parameters() if p.requires_grad] if optimizer is None else None)
    trainer.optimizer, trainer.lr_scheduler = ds_optimizer, ds_scheduler
    trainer.deepspeed_engine = engine
    return engine


def checkpoint_tag(step: int) -> str:
    return f"global_step{step}"
