"""Experiment trackers for the Accelerator (``log_with=``): the Trainer's reporting callbacks
(:mod:`openformers.training.integrations`) driven by ``init_trackers`` / ``log`` / ``end_training``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class GeneralTracker:
    """One open tracker: ``name`` ("tensorboard", "wandb", "mlflow", "comet_ml") and its callback."""

    def __init__(self, name: str, callback: Any, args: Any, state: Any, control: Any) -> None:
        self.name, self.callback, self.args, self.state, self.control = name, callback, args, state, control

    @property
    def tracker(self) -> Any:
        """The tracker's own object: TensorBoard's SummaryWriter, the wandb run, the mlflow module."""
        return getattr(self.callback, "writer", None) or getattr(self.callback, "run", None) or getattr(self.callback, "_mlflow", None)

    writer = tracker

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        if self.name == "tensorboard" and self.callback.writer is not None:
            self.callback.writer.add_text("config", json.dumps(values, indent=2, sort_keys=True, default=str))
            self.callback.writer.flush()
        elif self.name == "wandb" and self.callback.run is not None:
            self.callback.run.config.update(values, allow_val_change=True)
        elif self.name == "mlflow":
            self.callback._mlflow.log_params({k: str(v)[:500] for k, v in values.items()})
        elif self.name == "comet_ml" and getattr(self.callback, "experiment", None) is not None:
            self.callback.experiment.log_parameters(values)

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        self.state.global_step = int(step or 0)
        self.callback.on_log(self.args, self.state, self.control, logs=dict(values))

    def finish(self) -> None:
        self.callback.on_train_end(self.args, self.state, self.control)


def open_trackers(log_with: list[str], project_name: str, project_dir: Path, config: dict[str, Any] | None,
                  init_kwargs: dict[str, Any]) -> list[GeneralTracker]:
    """Start the trackers named in ``log_with`` ("all": every installed one) for ``project_name``."""
    import importlib.util

    from openformers.training.arguments import TrainingArguments
    from openformers.training.integrations import _REPORTERS, reporting_callbacks
    from openformers.training.state import TrainerControl, TrainerState

    names = list(log_with)
    if "all" in names:
        names = [n for n, (package, _, _) in _REPORTERS.items() if importlib.util.find_spec(package) is not None]
    names = [n for n in names if n != "none"]
    if not names:
        return []
    ignored = sorted(set(init_kwargs) & set(names))
    if ignored:
        import warnings

        warnings.warn(f"init_trackers: init_kwargs for {ignored} are not passed on; the trackers read their usual "
                      f"environment variables (WANDB_PROJECT, MLFLOW_TRACKING_URI, ...)", stacklevel=3)
    args = TrainingArguments(str(project_dir), logging_dir=str(Path(project_dir) / project_name), run_name=project_name,
                             report_to=names)
    trackers = []
    for name, callback in zip(names, reporting_callbacks(args)):
        state, control = TrainerState(is_world_process_zero=True), TrainerControl()
        if hasattr(callback, "setup"):
            callback.setup(args, state)
        else:
            callback.on_train_begin(args, state, control)
        tracker = GeneralTracker(name, callback, args, state, control)
        if config:
            tracker.store_init_configuration(config)
        trackers.append(tracker)
    return trackers
