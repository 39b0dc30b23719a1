"""Reporting to experiment trackers: TensorBoard, Weights & Biases, Comet, MLflow.

Each reporter is a callback; ``report_to`` picks them. A tracker that is asked for but not
installed is a clear error naming the package to install.
"""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from openformers.training.arguments import TrainingArguments
from openformers.training.callbacks import TrainerCallback
from openformers.training.state import TrainerControl, TrainerState


def _scalars(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _require(package: str, extra: str, name: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"report_to={name!r} needs the {package!r} package: pip install 'openformers[{extra}]' (or pip install {package})")


class TensorBoardCallback(TrainerCallback):
    """Writes event files under ``logging_dir`` (readable by TensorBoard)."""

    def __init__(self, tb_writer: Any = None) -> None:
        self.writer = tb_writer

    def _open(self, args: TrainingArguments) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=args.logging_dir)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if state.is_world_process_zero:
            self._open(args)
            self.writer.add_text("args", args.to_json_string())

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._open(args)
        for key, value in _scalars(logs or {}).items():
            tag = key if "/" in key else (f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}")
            self.writer.add_scalar(tag, value, state.global_step)
        self.writer.flush()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbCallback(TrainerCallback):
    """Logs to Weights & Biases. ``WANDB_PROJECT`` names the project; ``WANDB_LOG_MODEL``
    ("checkpoint", "end" or "false") uploads checkpoints or the final model as artifacts."""

    def __init__(self) -> None:
        import wandb

        self._wandb = wandb
        self.run = None

    def setup(self, args: TrainingArguments, state: TrainerState, model: Any = None) -> None:
        if self.run is not None or not state.is_world_process_zero:
            return
        config = {**_model_config(model), **args.to_sanitized_dict()}
        self.run = self._wandb.init(project=os.environ.get("WANDB_PROJECT", "openformers"), name=args.run_name,
                                    config=config, reinit=True)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kw: Any) -> None:
        self.setup(args, state, model)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None, model: Any = None, **kw: Any) -> None:
        self.setup(args, state, model)
        if self.run is None:
            return
        renamed = {(f"eval/{k[5:]}" if k.startswith("eval_") else f"train/{k}"): v for k, v in _scalars(logs or {}).items()}
        self.run.log({**renamed, "train/global_step": state.global_step})

    def _log_model(self, directory: Path, name: str, aliases: list[str]) -> None:
        artifact = self._wandb.Artifact(name=name, type="model", metadata={"path": str(directory)})
        artifact.add_dir(str(directory))
        self.run.log_artifact(artifact, aliases=aliases)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.run is None or os.environ.get("WANDB_LOG_MODEL", "false").lower() != "checkpoint":
            return
        directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if directory.is_dir():
            self._log_model(directory, f"checkpoint-{self.run.id}", [f"checkpoint-{state.global_step}"])

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None,
                     processing_class: Any = None, **kw: Any) -> None:
        if self.run is None:
            return
        if os.environ.get("WANDB_LOG_MODEL", "false").lower() in ("end", "true") and model is not None:
            from openformers.training.fsdp import is_sharded

            if is_sharded(model):  # gathering the shards needs every process; use WANDB_LOG_MODEL=checkpoint
                warnings.warn("WANDB_LOG_MODEL=end: the model is sharded (fsdp) and cannot be saved from the main "
                              "process alone; set WANDB_LOG_MODEL=checkpoint to upload the checkpoints", stacklevel=2)
            else:
                with tempfile.TemporaryDirectory() as tmp:  # wandb stages a copy of the files when they are added
                    model.save_pretrained(tmp)
                    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
                        processing_class.save_pretrained(tmp)
                    self._log_model(Path(tmp), f"model-{self.run.id}", ["latest"])
        self.run.finish()
        self.run = None


def _model_config(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    return config.to_dict() if config is not None and hasattr(config, "to_dict") else {}


class CometCallback(TrainerCallback):
    """Logs to Comet. ``COMET_MODE`` picks where: "online" (the default of Comet's own settings),
    "offline" (an archive under ``COMET_OFFLINE_DIRECTORY`` that ``comet upload`` sends later) or
    "disabled"; ``COMET_PROJECT_NAME`` names the project."""

    def __init__(self) -> None:
        import comet_ml

        self._comet = comet_ml
        self.experiment = None
        self._disabled = False

    def setup(self, args: TrainingArguments, state: TrainerState, model: Any = None) -> None:
        if self.experiment is not None or self._disabled or not state.is_world_process_zero:
            return
        mode = os.environ.get("COMET_MODE", "").strip().lower()
        if mode not in ("", "online", "offline", "disabled"):
            raise ValueError(f"COMET_MODE={os.environ['COMET_MODE']!r} must be 'online', 'offline' or 'disabled'")
        if mode == "disabled":
            self._disabled = True
            return
        online = {"online": True, "offline": False}.get(mode)  # None: Comet's own configuration decides
        self.experiment = self._comet.start(project_name=os.environ.get("COMET_PROJECT_NAME"), online=online)
        if args.run_name and args.run_name != args.output_dir:
            self.experiment.set_name(args.run_name)
        self.experiment.log_parameters(args.to_sanitized_dict())
        config = _model_config(model)
        if config:
            self.experiment.log_parameters(config, prefix="config")

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kw: Any) -> None:
        self.setup(args, state, model)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None,
               model: Any = None, **kw: Any) -> None:
        self.setup(args, state, model)
        if self.experiment is not None:
            self.experiment.log_metrics(_scalars(logs or {}), step=state.global_step, epoch=state.epoch)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.experiment is not None:
            self.experiment.end()  # offline: writes the archive
            self.experiment = None


class MLflowCallback(TrainerCallback):
    """Logs to MLflow (``MLFLOW_TRACKING_URI`` says where). ``MLFLOW_EXPERIMENT_NAME`` names the
    experiment, ``MLFLOW_TAGS`` (a JSON object) tags the run; a run already active is logged into
    and left open, a run started here is ended with training."""

    def __init__(self) -> None:
        import mlflow

        self._mlflow = mlflow
        self.started = False
        self._own_run = False

    def setup(self, args: TrainingArguments, state: TrainerState, model: Any = None) -> None:
        if self.started or not state.is_world_process_zero:
            return
        mlflow = self._mlflow
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if experiment and mlflow.active_run() is None:
            mlflow.set_experiment(experiment)
        if mlflow.active_run() is None:
            mlflow.start_run(run_name=args.run_name)
            self._own_run = True
        tags = os.environ.get("MLFLOW_TAGS")
        if tags:
            try:
                mlflow.set_tags(json.loads(tags))
            except (json.JSONDecodeError, AttributeError) as exc:
                raise ValueError(f"MLFLOW_TAGS must be a JSON object, got {tags!r}: {exc}") from exc
        from mlflow.utils.validation import (
            MAX_PARAM_VAL_LENGTH,
            MAX_PARAMS_TAGS_PER_BATCH,
        )

        params = {**{f"config/{k}": v for k, v in _model_config(model).items()}, **args.to_sanitized_dict()}
        items = [(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            mlflow.log_params(dict(items[i : i + MAX_PARAMS_TAGS_PER_BATCH]))
        self.started = True

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kw: Any) -> None:
        self.setup(args, state, model)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None,
               model: Any = None, **kw: Any) -> None:
        self.setup(args, state, model)
        if self.started:
            self._mlflow.log_metrics(_scalars(logs or {}), step=state.global_step)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.started and self._own_run:
            self._mlflow.end_run()
        self.started = self._own_run = False


_REPORTERS: dict[str, tuple[str, str, type]] = {
    "tensorboard": ("tensorboard", "tracking", TensorBoardCallback),
    "wandb": ("wandb", "tracking", WandbCallback),
    "comet_ml": ("comet_ml", "tracking", CometCallback),
    "mlflow": ("mlflow", "tracking", MLflowCallback),
}


def reporting_callbacks(args: TrainingArguments) -> list[TrainerCallback]:
    out: list[TrainerCallback] = []
    for name in args.report_to:  # type: ignore[union-attr]
        if name not in _REPORTERS:
            raise ValueError(f"report_to={name!r} is unknown; choose from {sorted(_REPORTERS) + ['none', 'all']}")
        package, extra, cls = _REPORTERS[name]
        _require(package, extra, name)
        out.append(cls())
    return out
