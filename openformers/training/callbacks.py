"""Trainer callbacks with the Hugging Face event names, and the built-in ones."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from openformers.training.arguments import TrainingArguments
from openformers.training.state import TrainerControl, TrainerState

EVENTS = (
    "on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
    "on_pre_optimizer_step", "on_optimizer_step", "on_substep_end", "on_step_end", "on_evaluate", "on_predict",
    "on_save", "on_log", "on_prediction_step",
)


class TrainerCallback:
    """Override any event: ``on_step_end(self, args, state, control, **kwargs)``.

    kwargs carry ``model``, ``processing_class``, ``optimizer``, ``lr_scheduler``,
    ``train_dataloader``, ``eval_dataloader``, ``metrics`` (on_evaluate) and ``logs`` (on_log).
    Returning a TrainerControl replaces the current one.
    """

    def __getattr__(self, name: str) -> Any:
        if name in EVENTS:
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def state(self) -> dict[str, Any]:
        """What a stateful callback saves in checkpoints (restored on resume)."""
        return {}

    def load_state(self, data: dict[str, Any]) -> None:
        pass


class CallbackHandler:
    def __init__(self, callbacks: list[TrainerCallback], **objects: Any) -> None:
        self.callbacks: list[TrainerCallback] = []
        self.objects = objects
        for cb in callbacks:
            self.add_callback(cb)

    def add_callback(self, callback: TrainerCallback | type) -> None:
        cb = callback() if isinstance(callback, type) else callback
        self.callbacks.append(cb)

    def pop_callback(self, callback: TrainerCallback | type) -> TrainerCallback | None:
        for cb in self.callbacks:
            if cb is callback or (isinstance(callback, type) and isinstance(cb, callback)):
                self.callbacks.remove(cb)
                return cb
        return None

    def remove_callback(self, callback: TrainerCallback | type) -> None:
        self.pop_callback(callback)

    def handles(self, event: str) -> bool:
        """Whether a callback implements ``event`` (beyond a base class's no-op)."""
        for cb in self.callbacks:
            method = getattr(type(cb), event, None)
            if method is not None and getattr(method, "__qualname__", "") != f"TrainerCallback.{event}":
                return True
        return False

    def call(self, event: str, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> TrainerControl:
        for cb in self.callbacks:
            result = getattr(cb, event)(args, state, control, **self.objects, **kwargs)
            if isinstance(result, TrainerControl):
                control = result
        return control


def _due(step: int, every: float, total: int) -> bool:
    if every <= 0:
        return False
    interval = math.ceil(every * total) if every < 1 else int(every)  # a float < 1 is a fraction of training
    return interval > 0 and step % interval == 0


class DefaultFlowCallback(TrainerCallback):
    """Decides when to log, evaluate and save from the strategies in TrainingArguments."""

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> TrainerControl:
        step = state.global_step
        if step == 1 and args.logging_first_step:
            control.should_log = True
        if args.logging_strategy == "steps" and _due(step, args.logging_steps, state.max_steps):
            control.should_log = True
        if args.eval_strategy == "steps" and step >= args.eval_delay and _due(step, args.eval_steps or 0, state.max_steps):
            control.should_evaluate = True
        if args.save_strategy == "steps" and _due(step, args.save_steps, state.max_steps):
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            if args.save_strategy != "no":
                control.should_save = True
        return control

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> TrainerControl:
        if args.logging_strategy == "epoch":
            control.should_log = True
        if args.eval_strategy == "epoch" and state.epoch >= args.eval_delay:
            control.should_evaluate = True
        if args.save_strategy == "epoch":
            control.should_save = True
        return control


class ProgressCallback(TrainerCallback):
    """A tqdm progress bar for training and evaluation (hidden when ``disable_tqdm``)."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, dynamic_ncols=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None, **kw: Any) -> None:
        if self.bar is not None and logs:
            self.bar.write(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()}))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PrinterCallback(TrainerCallback):
    """Prints the logs (used instead of the bar when ``disable_tqdm``)."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None, **kw: Any) -> None:
        if state.is_world_process_zero and logs:
            print(logs)


class JsonLinesLogCallback(TrainerCallback):
    """Always on: appends every log dict to ``output_dir/trainer_log.jsonl``."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        with open(os.path.join(args.output_dir, "trainer_log.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")


class EarlyStoppingCallback(TrainerCallback):
    """Stop when ``metric_for_best_model`` has not improved for ``early_stopping_patience`` evaluations."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0) -> None:
        if early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1")
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.patience_counter = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if args.metric_for_best_model is None:
            raise ValueError("EarlyStoppingCallback needs metric_for_best_model (and an eval_strategy) in TrainingArguments")
        if args.eval_strategy == "no":
            raise ValueError("EarlyStoppingCallback needs eval_strategy 'steps' or 'epoch'")

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: dict | None = None, **kw: Any) -> None:
        name = args.metric_for_best_model or "loss"
        key = name if name.startswith("eval_") else f"eval_{name}"
        value = (metrics or {}).get(key)
        if value is None:
            raise KeyError(f"EarlyStoppingCallback: metric {key!r} is not in the evaluation results {sorted(metrics or {})}")
        best = state.best_metric
        better = best is None or (
            value > best + self.early_stopping_threshold if args.greater_is_better else value < best - self.early_stopping_threshold
        )
        self.patience_counter = 0 if better else self.patience_counter + 1
        if self.patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True

    def state(self) -> dict[str, Any]:
        return {"patience_counter": self.patience_counter}

    def load_state(self, data: dict[str, Any]) -> None:
        self.patience_counter = int(data.get("patience_counter", 0))
