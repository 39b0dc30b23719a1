"""Hyperparameter search with optuna."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class BestRun:
    run_id: str
    objective: float
    hyperparameters: dict[str, Any]


def _default_space(trial: Any) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 5),
        "seed": trial.suggest_int("seed", 1, 40),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [4, 8, 16, 32, 64]),
    }


def _default_objective(metrics: dict[str, float]) -> float:
    if "eval_loss" in metrics and len([k for k in metrics if k.startswith("eval_") and not k.endswith(("runtime", "second"))]) == 1:
        return metrics["eval_loss"]
    scores = [v for k, v in metrics.items() if k.startswith("eval_") and not k.endswith(("runtime", "second", "loss", "epoch"))]
    return sum(scores) if scores else metrics.get("eval_loss", 0.0)


def run_hyperparameter_search(trainer: Any, hp_space: Callable[[Any], dict[str, Any]] | None,
                              compute_objective: Callable[[dict[str, float]], float] | None, n_trials: int,
                              direction: str, backend: str | None, **kwargs: Any) -> BestRun:
    if backend not in (None, "optuna"):
        raise ValueError(f"backend={backend!r} is not supported; openformers searches with optuna")
    if importlib.util.find_spec("optuna") is None:
        raise ImportError("hyperparameter_search needs optuna: pip install optuna")
    if trainer.model_init is None:
        raise ValueError("hyperparameter_search needs Trainer(model_init=...) so each trial starts from a fresh model")
    import copy

    import optuna

    space = hp_space or _default_space
    objective_fn = compute_objective or _default_objective
    base_args = copy.deepcopy(trainer.args)

    def objective(trial: Any) -> float:
        params = space(trial)
        trainer.args = copy.deepcopy(base_args)
        for key, value in params.items():
            if not hasattr(trainer.args, key):
                raise ValueError(f"hp_space returned {key!r}, which is not a TrainingArguments field")
            setattr(trainer.args, key, value)
        trainer.args.output_dir = f"{base_args.output_dir}/run-{trial.number}"
        trainer.train(trial=trial)
        return float(objective_fn(trainer.evaluate()))

    study = optuna.create_study(direction=direction, **kwargs)
    study.optimize(objective, n_trials=n_trials)
    trainer.args = base_args
    best = study.best_trial
    return BestRun(str(best.number), float(best.value), dict(best.params))
