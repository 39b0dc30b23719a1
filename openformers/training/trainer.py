"""The Trainer: a training loop with exact gradient accumulation, exact resume and streaming eval.

Loss normalisation: every micro-batch's mean loss is weighted by its share of the label
items (tokens for token-level labels, examples otherwise) of the whole accumulated batch,
across processes. The update therefore equals one step on the whole batch, whatever the
split, and the logged loss is the true mean over the logging window.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from openformers.core.seed import set_seed
from openformers.distributed.state import gradient_sync, wrap_model
from openformers.training import checkpointing as ckpt
from openformers.training import fsdp
from openformers.training.allocator import reuse_freed_memory
from openformers.training.arguments import TrainingArguments
from openformers.training.callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    JsonLinesLogCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from openformers.training.distributed import (
    distributed_device,
    init_distributed,
    launched_by_torchrun,
    unwrap_model,
)
from openformers.training.evaluation import (
    EvalPrediction,
    EvaluationMixin,
    TrainOutput,
)
from openformers.training.optim import create_optimizer
from openformers.training.reporting import ReportingMixin
from openformers.training.sampling import EpochSampler
from openformers.training.saving import CheckpointMixin
from openformers.training.schedulers import get_scheduler
from openformers.training.state import TrainerControl, TrainerState
from openformers.training.threads import static_thread_teams


class Trainer(CheckpointMixin, EvaluationMixin, ReportingMixin):
    """Train, evaluate and predict with a model; see TrainingArguments for the options."""

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator: Callable[[list[Any]], dict[str, Any]] | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Callable[..., nn.Module] | None = None,
        compute_loss_func: Callable[..., torch.Tensor] | None = None,
        compute_metrics: Callable[[EvalPrediction], dict[str, float]] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.args = args if args is not None else TrainingArguments("trainer_output")
        if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
            raise ValueError("pass either tokenizer= or processing_class=, not both")
        self.processing_class = processing_class if processing_class is not None else tokenizer
        self.model_init = model_init
        if model is None:
            if model_init is None:
                raise ValueError("Trainer needs a model= or a model_init= function")
            set_seed(self.args.seed)
            model = self._call_model_init()
        self.model = model
        self.fsdp_plan = fsdp.plan_from_args(self.args)
        self.deepspeed_engine: Any = None  # set by train() when args.deepspeed names a DeepSpeed config
        if self.args.deepspeed:
            if self.fsdp_plan is not None or not launched_by_torchrun():
                raise ValueError("deepspeed=...: launch the script with `openformers launch --num_processes N` (or "
                                 "torchrun), without fsdp")
        if self.fsdp_plan is not None:
            if not launched_by_torchrun():
                raise ValueError(f"fsdp={' '.join(self.args.fsdp)!r} shards the model over processes: launch the "
                                 f"script with torchrun --nproc_per_node N")
            if optimizers[0] is not None:
                raise ValueError("fsdp: the Trainer builds the optimizer after sharding the model (sharding replaces "
                                 "the parameters); pass no optimizers= and set optim/learning_rate instead")
        self.distributed = init_distributed(self.args, single_process_group=self.fsdp_plan is not None or bool(self.args.deepspeed))
        self.device = self.args.device if not self.distributed else distributed_device(self.args)
        if getattr(model, "hf_device_map", None) is None:  # a model placed by device_map stays where it is
            model.to(self.device)
        if data_collator is None:
            if self.processing_class is not None and hasattr(self.processing_class, "pad"):
                from openformers.data.collators import DataCollatorWithPadding

                data_collator = DataCollatorWithPadding(self.processing_class)
            else:
                from openformers.data.collators import default_data_collator

                data_collator = default_data_collator
        self.data_collator = data_collator
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.scaler: torch.amp.GradScaler | None = None
        self.state = TrainerState(is_world_process_zero=self.is_world_process_zero())
        self.control = TrainerControl()
        default_cbs: list[TrainerCallback] = [DefaultFlowCallback(), JsonLinesLogCallback()]
        default_cbs.append(PrinterCallback() if self.args.disable_tqdm else ProgressCallback())
        from openformers.training.integrations import reporting_callbacks

        default_cbs.extend(reporting_callbacks(self.args))
        self.callback_handler = CallbackHandler(default_cbs + list(callbacks or []), model=self.model,
                                                processing_class=self.processing_class)
        self._signature_columns: list[str] | None = None
        self._wrapped: nn.Module = model
        self.control = self.callback_handler.call("on_init_end", self.args, self.state, self.control)

    # -- public helpers -------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.processing_class

    def add_callback(self, callback: TrainerCallback | type) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: TrainerCallback | type) -> TrainerCallback | None:
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: TrainerCallback | type) -> None:
        self.callback_handler.remove_callback(callback)

    def is_world_process_zero(self) -> bool:
        return self.args.process_index == 0

    def _call_model_init(self, trial: Any = None) -> nn.Module:
        assert self.model_init is not None
        params = inspect.signature(self.model_init).parameters
        return self.model_init(trial) if len(params) == 1 else self.model_init()

    # -- data ---------------------------------------------------------------------------------
    def _signature(self) -> list[str]:
        if self._signature_columns is None:
            model = unwrap_model(self.model)
            params = list(inspect.signature(model.forward).parameters)
            if hasattr(model, "get_base_model"):  # adapter wrappers forward the base model's inputs
                params += list(inspect.signature(model.get_base_model().forward).parameters)
            self._signature_columns = params + ["label", "label_ids", "labels"] + list(self.args.label_names or [])
        return self._signature_columns

    def _prepare_dataset(self, dataset: Any) -> Any:
        if not self.args.remove_unused_columns or dataset is None:
            return dataset
        columns = getattr(dataset, "column_names", None)
        if isinstance(columns, list) and hasattr(dataset, "remove_columns"):
            unused = [c for c in columns if c not in self._signature()]
            if unused and len(unused) < len(columns):
                return dataset.remove_columns(unused)
        return dataset

    def _collate(self, features: list[Any]) -> dict[str, Any]:
        if self.args.remove_unused_columns and features and isinstance(features[0], Mapping):
            keep = set(self._signature())
            features = [{k: v for k, v in f.items() if k in keep} for f in features]
        return self.data_collator(features)

    def _loader(self, dataset: Any, batch_size: int, *, shuffle: bool, epoch: int = 0, skip_batches: int = 0) -> DataLoader:
        if dataset is None:
            raise ValueError("no dataset: pass train_dataset= / eval_dataset= to the Trainer or the call")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"{type(dataset).__name__} is not a map-style dataset (needs __len__ and __getitem__)")
        world, rank = (torch.distributed.get_world_size(), torch.distributed.get_rank()) if self.distributed else (1, 0)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        sampler = EpochSampler(len(dataset), seed=seed, epoch=epoch, shuffle=shuffle, skip=skip_batches * batch_size,
                               world_size=world, rank=rank)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, collate_fn=self._collate,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory and self.device.type == "cuda",
            drop_last=self.args.dataloader_drop_last, persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor if self.args.dataloader_num_workers > 0 else None,
            # a private generator: creating iterators must not consume the global RNG, or resumed
            # runs would draw different dropout masks
            generator=torch.Generator().manual_seed(seed),
        )

    def get_train_dataloader(self) -> DataLoader:
        return self._loader(self._prepare_dataset(self.train_dataset), self.args.per_device_train_batch_size, shuffle=True)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> DataLoader:
        ds = eval_dataset if eval_dataset is not None else self.eval_dataset
        return self._loader(self._prepare_dataset(ds), self.args.per_device_eval_batch_size, shuffle=False)

    def get_test_dataloader(self, test_dataset: Any) -> DataLoader:
        return self._loader(self._prepare_dataset(test_dataset), self.args.per_device_eval_batch_size, shuffle=False)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, Mapping):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        return batch

    # -- optimisation ---------------------------------------------------------------------------
    def create_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = create_optimizer(unwrap_model(self.model), self.args.optimizer)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        if self.lr_scheduler is None:
            s = self.args.schedule
            self.lr_scheduler = get_scheduler(s.lr_scheduler_type, optimizer or self.optimizer,
                                              self.args.get_warmup_steps(num_training_steps), num_training_steps, s.lr_scheduler_kwargs)
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps)

    def _autocast(self, evaluating: bool = False) -> contextlib.AbstractContextManager:
        p = self.args.precision
        if evaluating and (p.fp16_full_eval or p.bf16_full_eval):
            return contextlib.nullcontext()  # the model itself was cast
        if p.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if p.fp16:
            if self.device.type == "cpu":
                # float16 autocast on CPU is slow and needs loss scaling; bfloat16 has the range
                # float16 lacks and this CPU computes it natively
                if not getattr(self, "_warned_fp16_cpu", False):
                    import warnings

                    warnings.warn("fp16=True on CPU: training with bfloat16 autocast instead", stacklevel=3)
                    self._warned_fp16_cpu = True
                return torch.autocast("cpu", dtype=torch.bfloat16)
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    # -- loss -----------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: int | torch.Tensor | None = None) -> Any:
        """Mean loss of one micro-batch (the trainer weights it by its share of label items)."""
        if self.compute_loss_func is not None:
            labels = inputs.pop("labels", None)
            outputs = model(**inputs)
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        else:
            inputs = self._with_implicit_lm_labels(inputs)
            outputs = model(**inputs)
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs[0]
            if loss is None:
                raise ValueError(
                    f"{type(unwrap_model(model)).__name__} returned no loss: the batch has keys {sorted(inputs)}; "
                    f"pass labels (label_names={self.args.label_names}) or a compute_loss_func"
                )
        return (loss, outputs) if return_outputs else loss

    def _with_implicit_lm_labels(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """A causal LM batch with no labels trains on its own ``input_ids`` (padding ignored): a tokenized
        text dataset passed straight to the Trainer means language modelling, where transformers stops
        with "the model did not return a loss"."""
        if self.args.label_names or any(k in inputs for k in ("labels", "label", "label_ids")):
            return inputs
        ids = inputs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or not getattr(unwrap_model(self.model), "_is_causal_lm", False):
            return inputs
        mask = inputs.get("attention_mask")
        labels = ids.masked_fill(mask == 0, -100) if isinstance(mask, torch.Tensor) else ids.clone()
        return {**inputs, "labels": labels}

    def _label_keys(self) -> list[str]:
        return list(self.args.label_names or ["labels"])

    def _count_items(self, batch: dict[str, Any]) -> int:
        """Label items the model's mean loss averages over: tokens or examples."""
        labels = batch.get(self._label_keys()[0])
        if labels is None:
            labels = self._with_implicit_lm_labels(batch).get("labels")
        if not isinstance(labels, torch.Tensor):
            first = next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
            return int(first.shape[0]) if first is not None else 1
        if labels.is_floating_point():
            return labels.numel()
        if getattr(unwrap_model(self.model), "_is_causal_lm", False) and labels.dim() > 1:
            labels = labels[..., 1:]
        return int((labels != -100).sum())

    def training_step(self, model: nn.Module, inputs: dict[str, Any], weight: float) -> torch.Tensor:
        """Forward and backward one micro-batch with its loss weighted by ``weight``; returns the mean loss."""
        model.train()
        inputs = self._to_device(inputs)
        with self._autocast():
            loss = self.compute_loss(model, inputs)
        scaled = loss.float() * weight
        if self.deepspeed_engine is not None:  # the weight already divides by the accumulated batch
            self.deepspeed_engine.backward(scaled, scale_wrt_gas=False)
        elif self.scaler is not None:
            self.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        return loss.detach().float()

    # -- training -------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None, **kwargs: Any) -> TrainOutput:
        """Train; ``resume_from_checkpoint=True`` resumes from the newest complete checkpoint."""
        if kwargs:
            raise TypeError(f"train() got unknown arguments {sorted(kwargs)}")
        # on CPU, freed buffers are reused rather than re-faulted every step (training/allocator.py), and
        # every parallel region gets the same number of threads whatever the load (training/threads.py):
        # reductions split by thread, so a shrunken team changes the last bits and breaks exact resume
        cpu = self.device.type == "cpu"
        with reuse_freed_memory(enabled=cpu), static_thread_teams(enabled=cpu):
            return self._train(resume_from_checkpoint, trial)

    def _train(self, resume_from_checkpoint: str | bool | None, trial: Any) -> TrainOutput:
        args = self.args
        if resume_from_checkpoint is None and args.resume_from_checkpoint:
            resume_from_checkpoint = args.resume_from_checkpoint
        checkpoint: Path | None = None
        if resume_from_checkpoint is True:
            checkpoint = ckpt.last_checkpoint(args.output_dir)
            if checkpoint is None:
                raise ValueError(f"resume_from_checkpoint=True but {args.output_dir} holds no complete checkpoint")
        elif resume_from_checkpoint:
            checkpoint = Path(resume_from_checkpoint)
            if not (checkpoint / "trainer_state.json").is_file():
                raise ValueError(f"{checkpoint} is not a complete checkpoint (no trainer_state.json)")
        set_seed(args.seed, deterministic=args.full_determinism)
        if self.model_init is not None and trial is not None:
            self.model = self._call_model_init(trial).to(self.device)
            self.optimizer, self.lr_scheduler = None, None
        model = unwrap_model(self.model)
        if args.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(args.gradient_checkpointing_kwargs)
        train_dataset = self._prepare_dataset(self.train_dataset)
        probe = self._loader(train_dataset, args.per_device_train_batch_size, shuffle=True)
        batches_per_epoch = len(probe)
        if batches_per_epoch == 0:
            raise ValueError("the training set yields no batch (empty dataset, or drop_last with fewer rows than a batch)")
        accum = args.gradient_accumulation_steps
        updates_per_epoch = max(1, math.ceil(batches_per_epoch / accum))
        if args.max_steps > 0:
            max_steps = args.max_steps
            num_epochs = math.ceil(max_steps / updates_per_epoch)
        else:
            max_steps = math.ceil(args.num_train_epochs * updates_per_epoch)
            num_epochs = math.ceil(args.num_train_epochs)
        if args.deepspeed:  # the engine takes the model, optimizer and scheduler
            from openformers.distributed.deepspeed import trainer_engine

            wrapped = self._wrapped = trainer_engine(self, max_steps)
        else:
            wrapped = self._wrap_model()  # first: sharding replaces the parameters the optimizer holds
            self.create_optimizer_and_scheduler(max_steps)
        if args.fp16 and self.device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")
        self.state = TrainerState(max_steps=max_steps, logging_steps=args.logging_steps, eval_steps=args.eval_steps or 0,
                                  save_steps=args.save_steps, train_batch_size=args.per_device_train_batch_size,
                                  num_train_epochs=num_epochs, is_world_process_zero=self.is_world_process_zero())
        if checkpoint is not None:
            self._load_checkpoint(checkpoint)
        self.control = self.callback_handler.call("on_train_begin", args, self.state, self.control, optimizer=self.optimizer,
                                                  lr_scheduler=self.lr_scheduler, train_dataloader=probe)
        if args.eval_on_start and checkpoint is None:
            self._evaluate_and_track()
        start = time.time()
        total_loss_sum, total_items = 0.0, 0
        window_sum = torch.zeros((), dtype=torch.float64)
        window_items = 0
        last_grad_norm: float | None = None
        start_epoch, skip = self.state.epoch_index, self.state.steps_in_epoch * accum
        stop = self.state.global_step >= max_steps
        for epoch in range(start_epoch, num_epochs):
            if stop:
                break
            loader = self._loader(train_dataset, args.per_device_train_batch_size, shuffle=True, epoch=epoch,
                                  skip_batches=skip if epoch == start_epoch else 0)
            if epoch != start_epoch or skip == 0:
                self.state.steps_in_epoch = 0
            self.state.epoch_index = epoch
            self.control._new_epoch()
            self.control = self.callback_handler.call("on_epoch_begin", args, self.state, self.control)
            iterator = iter(loader)
            while True:
                group = [b for b in (next(iterator, None) for _ in range(accum)) if b is not None]
                if not group:
                    break
                self.control._new_step()
                self.control = self.callback_handler.call("on_step_begin", args, self.state, self.control)
                mean_sum, items, last_grad_norm = self._update(wrapped, group)
                total_loss_sum += mean_sum
                total_items += items
                window_sum += mean_sum
                window_items += items
                self.state.global_step += 1
                self.state.steps_in_epoch += 1
                self.state.epoch = epoch + self.state.steps_in_epoch / updates_per_epoch
                self.control = self.callback_handler.call("on_step_end", args, self.state, self.control)
                if self.state.steps_in_epoch >= updates_per_epoch:
                    self.state.epoch_index, self.state.steps_in_epoch = epoch + 1, 0
                    self.control = self.callback_handler.call("on_epoch_end", args, self.state, self.control)
                if self.control.should_log:
                    self._log_training(float(window_sum) / max(window_items, 1), last_grad_norm)
                    window_sum.zero_()
                    window_items = 0
                if self.control.should_evaluate:
                    self._evaluate_and_track()
                if self.control.should_save:
                    self._save_checkpoint()
                if self.control.should_training_stop or self.state.global_step >= max_steps:
                    stop = True
                    break
                if self.control.should_epoch_stop or self.state.epoch_index > epoch:
                    break
        runtime = time.time() - start
        if args.load_best_model_at_end and self.state.best_model_checkpoint:
            self._load_model_weights(Path(self.state.best_model_checkpoint))
        train_loss = total_loss_sum / max(total_items, 1)
        n_samples = self.state.global_step * args.per_device_train_batch_size * accum * (torch.distributed.get_world_size() if self.distributed else 1)
        metrics = {"train_runtime": round(runtime, 4), "train_samples_per_second": round(n_samples / max(runtime, 1e-9), 3),
                   "train_steps_per_second": round(self.state.global_step / max(runtime, 1e-9), 3),
                   "total_flos": self.state.total_flos, "train_loss": train_loss, "epoch": self.state.epoch}
        self.log(metrics)
        self.control = self.callback_handler.call("on_train_end", args, self.state, self.control)
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def _update(self, model: nn.Module, group: list[dict[str, Any]]) -> tuple[float, int, float | None]:
        counts = [self._count_items(b) for b in group]
        flos = sum(self.floating_point_ops(b) for b in group)
        total = sum(counts)
        world = 1
        if self.distributed:  # items and flos summed over every process in one all-reduce
            t = torch.tensor([total, flos], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            total, flos, world = int(t[0].item()), float(t[1].item()), torch.distributed.get_world_size()
        self.state.total_flos += flos
        loss_sum = 0.0
        for i, (batch, n) in enumerate(zip(group, counts)):
            engine = self.deepspeed_engine
            if engine is not None:
                engine.set_gradient_accumulation_boundary(i == len(group) - 1)
            # gradients are reduced over processes only after the last micro-batch
            with gradient_sync(model, i == len(group) - 1):
                # n == 0: nothing to learn from (all labels ignored); keep DDP in step with a zero loss.
                # DDP, FSDP and ZeRO average gradients over processes; the world factor turns that into a sum
                loss = self.training_step(model, batch, n * world / max(total, 1) if n else 0.0)
            if engine is not None:
                engine.step()  # at the boundary: clipping, the optimizer and scheduler steps
            if n == 0:
                continue
            loss_sum += float(loss) * n
            self.control = self.callback_handler.call("on_substep_end", self.args, self.state, self.control)
        if self.distributed:
            t = torch.tensor([loss_sum], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            loss_sum = float(t.item())
        grad_norm = None
        if self.deepspeed_engine is not None:  # the engine has updated
            norm = self.deepspeed_engine.get_global_grad_norm()
            self.control = self.callback_handler.call("on_optimizer_step", self.args, self.state, self.control)
            return loss_sum, total, float(norm) if norm is not None else None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            grad_norm = self._clip_grad_norm(self.args.max_grad_norm)
        # after clipping, as transformers calls it: the gradients a callback sees are the clipped ones
        self.control = self.callback_handler.call("on_pre_optimizer_step", self.args, self.state, self.control)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            try:
                self.optimizer.step()
            finally:
                if getattr(self.optimizer, "grad_scale", None) is not None:  # set by _clip_grad_norm
                    self.optimizer.grad_scale = None
        self.control = self.callback_handler.call("on_optimizer_step", self.args, self.state, self.control)
        if not isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, total, grad_norm

    def _clip_grad_norm(self, max_norm: float) -> float:
        """Scale the gradients to a total 2-norm of at most ``max_norm``; returns the norm before.

        As ``clip_grad_norm_``, but a norm within bounds leaves the gradients alone: scaling
        them by exactly 1.0 would change no bit and cost a pass over every gradient. With torch's
        fused Adam/AdamW kernel (and no gradient scaler) the scaling is that kernel's: it divides
        each gradient by ``optimizer.grad_scale`` as it reads it and stores the result back in
        ``.grad``, so the step and the gradients after it are the clipped ones (to rounding: a
        division by ``1 / coef`` where clipping multiplies by ``coef``) without a pass of its own.
        Not when a callback implements ``on_pre_optimizer_step``, which sees the gradients clipped.
        """
        params = [p for p in unwrap_model(self.model).parameters() if p.grad is not None]
        if self.fsdp_plan is not None or not params:  # sharded: the norm is a DTensor reduced over processes
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        grads = [p.grad for p in params]
        norm = torch.nn.utils.get_total_norm(grads)
        if not float(max_norm / (norm + 1e-6)) >= 1.0:  # clip_grad_norm_'s coefficient before its clamp at 1 (or nan)
            if self._clips_in_optimizer(norm):
                self.optimizer.grad_scale = ((norm + 1e-6) / max_norm).to(device=norm.device, dtype=torch.float32)
            else:
                torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return float(norm)

    def _clips_in_optimizer(self, norm: torch.Tensor) -> bool:
        """Whether the optimizer step can apply the clipping (see ``_clip_grad_norm``)."""
        opt = self.optimizer
        return (self.scaler is None and bool(torch.isfinite(norm)) and isinstance(opt, (torch.optim.Adam, torch.optim.AdamW))
                and bool(opt.defaults.get("fused")) and getattr(opt, "grad_scale", None) is None
                and not self.callback_handler.handles("on_pre_optimizer_step"))  # it reads the clipped gradients

    def _wrap_model(self) -> nn.Module:
        compile_kwargs = {"backend": self.args.torch_compile_backend or "inductor", "mode": self.args.torch_compile_mode}
        model = wrap_model(self.model, self.device, distributed=self.distributed, fsdp_plan=self.fsdp_plan,
                           find_unused_parameters=bool(self.args.ddp_find_unused_parameters),
                           compile_kwargs=compile_kwargs if self.args.torch_compile else None)
        self._wrapped = model
        return model

    def _current_lr(self) -> float:
        if self.lr_scheduler is not None and hasattr(self.lr_scheduler, "get_last_lr"):
            return float(self.lr_scheduler.get_last_lr()[0])
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else 0.0

    def _log_training(self, loss: float, grad_norm: float | None) -> None:
        logs: dict[str, float] = {"loss": loss}
        if grad_norm is not None:
            logs["grad_norm"] = grad_norm
        logs["learning_rate"] = self._current_lr()
        self.log(logs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Record ``logs`` (with the epoch) in the history and send them to every reporter."""
        if self.state.epoch is not None:
            logs = {**logs, "epoch": self.state.epoch}
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.call("on_log", self.args, self.state, self.control, logs=logs)

    def push_to_hub(self, commit_message: str = "End of training", **kwargs: Any) -> str:
        """Write model, tokenizer and a model card to the local hub (Hugging Face cache layout)."""
        from openformers.training.hub import push_to_local_hub

        return push_to_local_hub(self, commit_message=commit_message, **kwargs)

    def create_model_card(self, **kwargs: Any) -> Any:
        """Write README.md to ``output_dir``: Hub metadata (model-index with the last evaluation),
        hyperparameters and the training log table. Keywords: ``language``, ``license``, ``tags``,
        ``model_name``, ``finetuned_from``, ``tasks``, ``dataset_tags``, ``dataset``, ``dataset_args``."""
        from openformers.training.hub import create_model_card

        return create_model_card(self, **kwargs)

    def hyperparameter_search(self, hp_space: Callable[[Any], dict[str, Any]] | None = None,
                              compute_objective: Callable[[dict[str, float]], float] | None = None, n_trials: int = 20,
                              direction: str = "minimize", backend: str | None = None, **kwargs: Any) -> Any:
        """Search hyperparameters with optuna (the only backend); returns the best run."""
        from openformers.training.hpo import run_hyperparameter_search

        return run_hyperparameter_search(self, hp_space, compute_objective, n_trials, direction, backend, **kwargs)
