"""Evaluation and prediction for the Trainer: streaming loops that keep one batch of logits on the device.

Metrics are computed batch by batch (``batch_eval_metrics``) or over host-side arrays that each
batch is moved into as soon as it is produced.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from openformers.training.distributed import unwrap_model


@dataclass
class EvalPrediction:
    predictions: Any
    label_ids: Any
    inputs: Any = None
    losses: Any = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.predictions, self.label_ids) if self.inputs is None else (self.predictions, self.label_ids, self.inputs))

    def __getitem__(self, i: int) -> Any:
        return tuple(self)[i]


@dataclass
class TrainOutput:
    global_step: int
    training_loss: float
    metrics: dict[str, float]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.global_step, self.training_loss, self.metrics))


@dataclass
class PredictionOutput:
    predictions: Any
    label_ids: Any
    metrics: dict[str, float] | None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.predictions, self.label_ids, self.metrics))



_NOT_OUTPUTS = ("loss", "past_key_values", "hidden_states", "attentions")


class EvaluationMixin:
    """``evaluate``, ``predict`` and their loop; mixed into :class:`Trainer`."""

    def _evaluate_and_track(self) -> dict[str, float]:
        metrics = self.evaluate()
        name = self.args.metric_for_best_model
        if name is not None:
            key = name if name.startswith("eval_") else f"eval_{name}"
            if key not in metrics:
                raise KeyError(f"metric_for_best_model={name!r}: {key!r} is not among the evaluation results {sorted(metrics)}")
            value = metrics[key]
            best = self.state.best_metric
            if best is None or (value > best if self.args.greater_is_better else value < best):
                self.state.best_metric = value
                self.state.best_global_step = self.state.global_step
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.lr_scheduler.step(metrics.get("eval_loss", 0.0))
        return metrics

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Loss and ``compute_metrics`` over the evaluation set, computed batch by batch."""
        loader = self.get_eval_dataloader(eval_dataset)
        start = time.time()
        output = self.evaluation_loop(loader, "Evaluation", ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        runtime = time.time() - start
        n = len(loader.dataset)
        output.metrics.update({f"{metric_key_prefix}_runtime": round(runtime, 4),
                               f"{metric_key_prefix}_samples_per_second": round(n / max(runtime, 1e-9), 3),
                               f"{metric_key_prefix}_steps_per_second": round(len(loader) / max(runtime, 1e-9), 3)})
        if self.state.epoch is not None:  # the reference's evaluate() results carry the epoch
            output.metrics["epoch"] = self.state.epoch
        self.log(output.metrics)
        self.control = self.callback_handler.call("on_evaluate", self.args, self.state, self.control, metrics=output.metrics)
        return output.metrics

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test") -> PredictionOutput:
        loader = self.get_test_dataloader(test_dataset)
        start = time.time()
        output = self.evaluation_loop(loader, "Prediction", ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        runtime = time.time() - start
        output.metrics.update({f"{metric_key_prefix}_runtime": round(runtime, 4),
                               f"{metric_key_prefix}_samples_per_second": round(len(loader.dataset) / max(runtime, 1e-9), 3),
                               f"{metric_key_prefix}_steps_per_second": round(len(loader) / max(runtime, 1e-9), 3)})
        self.control = self.callback_handler.call("on_predict", self.args, self.state, self.control, metrics=output.metrics)
        return output

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:
        inputs = self._to_device(inputs)
        label_keys = self._label_keys()
        labels = inputs.get(label_keys[0]) if len(label_keys) == 1 else tuple(inputs.get(k) for k in label_keys)
        with torch.no_grad(), self._autocast(evaluating=True):  # (inference leaves the weights' storage alone)
            has_labels = all(inputs.get(k) is not None for k in label_keys)
            if has_labels:
                loss, outputs = self.compute_loss(model, dict(inputs), return_outputs=True)
                loss = loss.detach().float()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        skip = set(_NOT_OUTPUTS) | set(ignore_keys or [])
        if isinstance(outputs, Mapping):
            logits = tuple(v for k, v in outputs.items() if k not in skip)
        else:
            logits = tuple(outputs[1:] if has_labels else outputs)
        logits = logits[0] if len(logits) == 1 else logits
        return loss, logits, labels

    def evaluation_loop(self, dataloader: DataLoader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> PredictionOutput:
        args = self.args
        model = unwrap_model(self.model)
        if args.fp16_full_eval or args.bf16_full_eval:
            model = model.to(torch.float16 if args.fp16_full_eval else torch.bfloat16)
        model.eval()
        loss_only = args.prediction_loss_only if prediction_loss_only is None else prediction_loss_only
        batch_metrics = args.batch_eval_metrics and self.compute_metrics is not None
        loss_sum, items = 0.0, 0
        preds: list[Any] = []
        label_list: list[Any] = []
        n_batches = len(dataloader)
        for i, inputs in enumerate(dataloader):
            n = self._count_items(inputs)
            loss, logits, labels = self.prediction_step(model, inputs, loss_only, ignore_keys)
            if loss is not None and n:
                loss_sum += float(loss) * n
                items += n
            if loss_only:
                continue
            if logits is not None and self.preprocess_logits_for_metrics is not None:
                logits = self.preprocess_logits_for_metrics(logits, labels)
            # to the host at once: the accelerator never holds more than one batch of logits
            logits_np, labels_np = _to_numpy(logits), _to_numpy(labels)
            if batch_metrics:
                self._batch_metric_result = self.compute_metrics(
                    EvalPrediction(logits_np, labels_np), compute_result=(i == n_batches - 1))  # type: ignore[call-arg]
            else:
                preds.append(logits_np)
                label_list.append(labels_np)
            self.control = self.callback_handler.call("on_prediction_step", args, self.state, self.control)
        if args.fp16_full_eval or args.bf16_full_eval:
            model.float()
        if getattr(self, "distributed", False):  # the loss over every process's share of the data
            totals = torch.tensor([loss_sum, items], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(totals)
            loss_sum, items = float(totals[0]), int(totals[1])
        predictions = _concat(preds) if preds else None
        label_ids = _concat(label_list) if label_list and label_list[0] is not None else None
        metrics: dict[str, float] = {}
        if batch_metrics and n_batches:
            metrics.update(self._batch_metric_result or {})
        elif self.compute_metrics is not None and predictions is not None and label_ids is not None:
            metrics.update(self.compute_metrics(EvalPrediction(predictions, label_ids)))
        if items:
            metrics["loss"] = loss_sum / items
        metrics = {(k if k.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{k}"): _plain(v) for k, v in metrics.items()}
        return PredictionOutput(predictions, label_ids, metrics)


def _to_numpy(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        v = value.detach().cpu()
        return (v.float() if v.dtype in (torch.bfloat16, torch.float16) else v).numpy()
    if isinstance(value, (tuple, list)):
        return type(value)(_to_numpy(v) for v in value)
    return value


def _concat(parts: list[Any]) -> Any:
    """Concatenate per-batch arrays along the batch axis, padding ragged sequence axes with -100."""
    first = parts[0]
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([p[i] for p in parts]) for i in range(len(first)))
    if first is None:
        return None
    arrays = [np.asarray(p) for p in parts]
    if arrays[0].ndim <= 1 or all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    shape = [sum(a.shape[0] for a in arrays)] + [max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim)]
    out = np.full(shape, -100, dtype=arrays[0].dtype)
    row = 0
    for a in arrays:
        out[(slice(row, row + a.shape[0]),) + tuple(slice(0, s) for s in a.shape[1:])] = a
        row += a.shape[0]
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    return v

