"""TrainingArguments: every option users know from the Hugging Face Trainer, checked up front.

Older spellings that transformers 5 removed (``evaluation_strategy``, ``warmup_ratio``,
``logging_dir``, ``no_cuda``, ...) are accepted beside the new ones. Contradictory settings
fail at construction with a message that says which options clash. The flat fields are
grouped into small read-only views (``args.optimizer``, ``args.schedule``, ...) that the
trainer's parts use, so each part sees only what concerns it.
"""
from __future__ import annotations

import contextlib
import enum
import json
import math
import os
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

STRATEGIES = ("no", "steps", "epoch")


class ParallelMode(enum.Enum):
    """How a run is spread over devices (``args.parallel_mode``)."""

    NOT_PARALLEL = "not_parallel"
    NOT_DISTRIBUTED = "not_distributed"
    DISTRIBUTED = "distributed"
    SAGEMAKER_MODEL_PARALLEL = "sagemaker_model_parallel"
    SAGEMAKER_DATA_PARALLEL = "sagemaker_data_parallel"
    TPU = "tpu"


SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw", "sgd", "adafactor", "adagrad", "rmsprop", "adam")
# transformers 4 name -> current name
_RENAMED = {"evaluation_strategy": "eval_strategy", "no_cuda": "use_cpu", "per_gpu_train_batch_size": "per_device_train_batch_size",
            "per_gpu_eval_batch_size": "per_device_eval_batch_size"}


@dataclass(frozen=True)
class OptimizerSettings:
    name: str
    learning_rate: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    max_grad_norm: float
    optim_args: str | None


@dataclass(frozen=True)
class ScheduleSettings:
    lr_scheduler_type: str
    warmup_steps: int
    warmup_ratio: float
    lr_scheduler_kwargs: dict[str, Any]


@dataclass(frozen=True)
class PrecisionSettings:
    fp16: bool
    bf16: bool
    fp16_full_eval: bool
    bf16_full_eval: bool
    half_precision_backend: str


@dataclass(frozen=True)
class LoggingSettings:
    strategy: str
    steps: float
    first_step: bool
    logging_dir: str
    report_to: list[str]
    run_name: str
    disable_tqdm: bool


@dataclass(frozen=True)
class CheckpointSettings:
    strategy: str
    steps: float
    total_limit: int | None
    only_model: bool
    on_each_node: bool


@dataclass(frozen=True)
class EvaluationSettings:
    strategy: str
    steps: float
    batch_size: int
    accumulation_steps: int | None
    load_best_model_at_end: bool
    metric_for_best_model: str | None
    greater_is_better: bool | None


@dataclass
class TrainingArguments:
    """Options of a training run; names and defaults follow the Hugging Face Trainer."""

    output_dir: str | None = None
    overwrite_output_dir: bool = False
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    # schedule length and batching
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    eval_accumulation_steps: int | None = None
    # optimiser
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    optim_args: str | None = None
    label_smoothing_factor: float = 0.0
    # learning-rate schedule
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    warmup_steps: float = 0
    warmup_ratio: float = 0.0
    # precision and speed
    fp16: bool = False
    bf16: bool = False
    fp16_full_eval: bool = False
    bf16_full_eval: bool = False
    half_precision_backend: str = "auto"
    gradient_checkpointing: bool = False
    gradient_checkpointing_kwargs: dict[str, Any] | None = None
    torch_compile: bool = False
    torch_compile_backend: str | None = None
    torch_compile_mode: str | None = None
    use_cpu: bool = False
    # logging
    logging_dir: str | None = None
    logging_strategy: str = "steps"
    logging_steps: float = 500
    logging_first_step: bool = False
    logging_nan_inf_filter: bool = True
    report_to: str | list[str] | None = "none"
    run_name: str | None = None
    disable_tqdm: bool | None = None
    log_level: str = "passive"
    log_level_replica: str = "warning"
    log_on_each_node: bool = True
    # evaluation
    eval_strategy: str = "no"
    eval_steps: float | None = None
    eval_delay: float = 0
    eval_on_start: bool = False
    prediction_loss_only: bool = False
    batch_eval_metrics: bool = False
    eval_do_concat_batches: bool = True
    # checkpoints
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    save_on_each_node: bool = False
    save_safetensors: bool = True
    resume_from_checkpoint: str | None = None
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    ignore_data_skip: bool = False
    # data
    seed: int = 42
    data_seed: int | None = None
    full_determinism: bool = False
    dataloader_num_workers: int = 0
    dataloader_pin_memory: bool = True
    dataloader_drop_last: bool = False
    dataloader_persistent_workers: bool = False
    dataloader_prefetch_factor: int | None = None
    remove_unused_columns: bool = True
    label_names: list[str] | None = None
    group_by_length: bool = False
    length_column_name: str = "length"
    # distributed
    local_rank: int = -1
    ddp_backend: str | None = None
    ddp_find_unused_parameters: bool | None = None
    ddp_timeout: int = 1800
    fsdp: str | list[str] = ""
    fsdp_config: dict[str, Any] | str | None = None
    deepspeed: dict[str, Any] | str | None = None  # a DeepSpeed config (JSON file or dict): ZeRO training
    # hub (a local directory in the Hugging Face cache layout)
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = None
    hub_strategy: str = "every_save"
    hub_private_repo: bool | None = None
    # removed upstream, accepted here
    evaluation_strategy: str | None = None
    no_cuda: bool | None = None

    def __init__(self, output_dir: str | None = None, **kwargs: Any) -> None:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(kwargs) - known - set(_RENAMED))
        if unknown:
            raise TypeError(f"TrainingArguments got unknown arguments {unknown}; check their spelling")
        for f in fields(self):
            if f.name == "output_dir":
                continue
            default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
            setattr(self, f.name, kwargs.get(f.name, default))
        for old, new in _RENAMED.items():
            if kwargs.get(old) is not None:
                if new in kwargs and kwargs[new] != kwargs[old] and old not in ("no_cuda",):
                    raise ValueError(f"both {old}={kwargs[old]!r} and {new}={kwargs[new]!r} given; use only {new}")
                setattr(self, new, (bool(kwargs[old]) if old == "no_cuda" else kwargs[old]))
        self.output_dir = output_dir if output_dir is not None else "trainer_output"
        self.__post_init__()

    def __post_init__(self) -> None:
        for name in ("eval_strategy", "save_strategy", "logging_strategy"):
            value = str(getattr(self, name)).lower()
            if value not in STRATEGIES:
                raise ValueError(f"{name}={getattr(self, name)!r} must be one of {STRATEGIES}")
            setattr(self, name, value)
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"lr_scheduler_type={self.lr_scheduler_type!r} must be one of {SCHEDULERS}")
        if self.optim not in OPTIMIZERS:
            raise ValueError(f"optim={self.optim!r} must be one of {OPTIMIZERS}")
        if self.fp16 and self.bf16:
            raise ValueError("fp16=True and bf16=True were both given; choose one")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if 0 < self.warmup_steps < 1:  # transformers 5 folds the ratio into warmup_steps
            self.warmup_ratio, self.warmup_steps = float(self.warmup_steps), 0
        if self.eval_strategy != "no":
            self.do_eval = True  # as the reference: an evaluation schedule implies do_eval
        if self.eval_strategy == "steps" and self.eval_steps is None:
            self.eval_steps = self.logging_steps
        if self.eval_strategy == "steps" and not self.eval_steps:
            raise ValueError("eval_strategy='steps' needs eval_steps > 0 (or logging_steps > 0)")
        if self.save_strategy == "steps" and self.save_steps <= 0:
            raise ValueError("save_strategy='steps' needs save_steps > 0")
        if self.logging_strategy == "steps" and self.logging_steps <= 0:
            raise ValueError("logging_strategy='steps' needs logging_steps > 0")
        if self.load_best_model_at_end:
            if self.eval_strategy == "no":
                raise ValueError("load_best_model_at_end=True needs evaluation: set eval_strategy to 'steps' or 'epoch'")
            if self.save_strategy != self.eval_strategy:
                raise ValueError(
                    f"load_best_model_at_end=True needs save_strategy ({self.save_strategy!r}) to equal "
                    f"eval_strategy ({self.eval_strategy!r}) so every evaluated model is saved"
                )
            if self.save_strategy == "steps" and self.save_steps % self.eval_steps != 0:  # type: ignore[operator]
                raise ValueError(
                    f"load_best_model_at_end=True needs save_steps ({self.save_steps}) to be a multiple of "
                    f"eval_steps ({self.eval_steps})"
                )
            if self.metric_for_best_model is None:
                self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.removeprefix("eval_").endswith("loss")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 or None, got {self.save_total_limit}")
        if self.logging_dir is None:
            self.logging_dir = os.path.join(self.output_dir, "runs")
        if self.report_to in (None, "none", ["none"]):
            self.report_to = []
        elif self.report_to == "all":
            self.report_to = ["tensorboard", "wandb"]
        elif isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        if self.run_name is None:
            self.run_name = self.output_dir
        if self.disable_tqdm is None:
            self.disable_tqdm = bool(os.environ.get("CI")) or self.log_level in ("warning", "error", "critical")
        if self.push_to_hub and not (self.hub_model_id or self.output_dir):
            raise ValueError("push_to_hub=True needs hub_model_id (e.g. 'my-org/my-model')")
        if (self.torch_compile_backend or self.torch_compile_mode) and not self.torch_compile:
            self.torch_compile = True  # naming a backend or mode asks for compilation
        if isinstance(self.fsdp, str):
            self.fsdp = [s for s in self.fsdp.split() if s]
        if self.local_rank == -1:
            self.local_rank = int(os.environ.get("LOCAL_RANK", -1))
        # keep the legacy names readable after construction
        self.evaluation_strategy = self.eval_strategy
        self.no_cuda = self.use_cpu

    # -- derived values -----------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", 1))

    @property
    def process_index(self) -> int:
        return int(os.environ.get("RANK", 0))

    @property
    def should_save(self) -> bool:
        return self.save_on_each_node or self.process_index == 0

    @property
    def local_process_index(self) -> int:
        """This process's index on its machine (``LOCAL_RANK``; 0 when not distributed)."""
        return max(self.local_rank, 0) if self.local_rank != -1 else int(os.environ.get("LOCAL_RANK", 0))

    @property
    def should_log(self) -> bool:
        """Whether this process logs: the main process (of each node with ``log_on_each_node``)."""
        return (self.local_process_index if self.log_on_each_node else self.process_index) == 0

    def get_process_log_level(self) -> int:
        """The log level for this process: ``log_level`` on the main process, ``log_level_replica`` elsewhere
        (``"passive"`` keeps the library's current level)."""
        import logging as _logging

        levels = {"debug": _logging.DEBUG, "info": _logging.INFO, "warning": _logging.WARNING,
                  "error": _logging.ERROR, "critical": _logging.CRITICAL, "detail": _logging.DEBUG}
        for name, value in (("log_level", self.log_level), ("log_level_replica", self.log_level_replica)):
            if value != "passive" and value not in levels:
                raise ValueError(f"{name}={value!r} must be one of {['passive', *levels]}")
        chosen = self.log_level if self.should_log else self.log_level_replica
        if chosen == "passive":  # the library's current level, read without setting up its handler
            return _logging.getLogger("openformers").getEffectiveLevel()
        return levels[chosen]

    @property
    def parallel_mode(self) -> ParallelMode:
        if self.local_rank != -1 or self.world_size > 1:
            return ParallelMode.DISTRIBUTED
        if self.n_gpu > 1:
            return ParallelMode.NOT_DISTRIBUTED
        return ParallelMode.NOT_PARALLEL

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work") -> Iterator[None]:
        """Run the block on the main process first (it fills caches), then on the others.

        ``local=True`` orders the processes of each machine, ``False`` those of the whole run. A
        single process just runs the block."""
        import torch.distributed as dist

        distributed = self.world_size > 1 and dist.is_available() and dist.is_initialized()
        is_main = (self.local_process_index if local else self.process_index) == 0
        if distributed and not is_main:
            dist.barrier()  # wait for the main process to finish `desc`
        try:
            yield
        finally:
            if distributed and is_main:
                dist.barrier()  # release the others

    @property
    def train_batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size

    @property
    def device(self) -> Any:
        import torch

        if self.use_cpu or not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", max(self.local_rank, 0))

    @property
    def n_gpu(self) -> int:
        return 0 if self.device.type == "cpu" else 1

    def get_warmup_steps(self, num_training_steps: int) -> int:
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_ratio)

    # -- grouped views ------------------------------------------------------------------------
    @property
    def optimizer(self) -> OptimizerSettings:
        return OptimizerSettings(self.optim, self.learning_rate, self.weight_decay, (self.adam_beta1, self.adam_beta2),
                                 self.adam_epsilon, self.max_grad_norm, self.optim_args)

    @property
    def schedule(self) -> ScheduleSettings:
        return ScheduleSettings(self.lr_scheduler_type, int(self.warmup_steps), self.warmup_ratio, dict(self.lr_scheduler_kwargs or {}))

    @property
    def precision(self) -> PrecisionSettings:
        return PrecisionSettings(self.fp16, self.bf16, self.fp16_full_eval, self.bf16_full_eval, self.half_precision_backend)

    @property
    def logging(self) -> LoggingSettings:
        return LoggingSettings(self.logging_strategy, self.logging_steps, self.logging_first_step, self.logging_dir,  # type: ignore[arg-type]
                               list(self.report_to), self.run_name, bool(self.disable_tqdm))  # type: ignore[arg-type]

    @property
    def checkpointing(self) -> CheckpointSettings:
        return CheckpointSettings(self.save_strategy, self.save_steps, self.save_total_limit, self.save_only_model, self.save_on_each_node)

    @property
    def evaluation(self) -> EvaluationSettings:
        return EvaluationSettings(self.eval_strategy, self.eval_steps or 0, self.per_device_eval_batch_size,
                                  self.eval_accumulation_steps, self.load_best_model_at_end, self.metric_for_best_model,
                                  self.greater_is_better)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("hub_token", None)
        for legacy in ("evaluation_strategy", "no_cuda"):
            out.pop(legacy, None)
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    def to_sanitized_dict(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in self.to_dict().items()}
