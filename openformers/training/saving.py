"""Saving and loading for the Trainer: checkpoints (written atomically), the final model, resume.

Sharded (FSDP) training gathers the full model and optimizer state first, on every process,
then the saving processes write the ordinary layout.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from openformers.training import checkpointing as ckpt
from openformers.training import fsdp
from openformers.training.distributed import unwrap_model
from openformers.training.state import TrainerState


class CheckpointMixin:
    """``save_model``, ``save_state``, checkpoint writing and resume; mixed into :class:`Trainer`."""

    def _full_states(self, with_optimizer: bool, checkpoint: bool = False) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
        """Sharded training: the unsharded model (and optimizer) state for the saving processes.
        Every process must call this; unsharded training returns (None, None)."""
        model = unwrap_model(self.model)
        if getattr(self, "deepspeed_engine", None) is not None:  # ZeRO-3 gathers the partitions; the engine saves the optimizer
            from openformers.distributed.deepspeed import full_state_dict

            return full_state_dict(self.deepspeed_engine), None
        if self.fsdp_plan is None or not fsdp.is_sharded(model) or (checkpoint and self.fsdp_plan.sharded_checkpoint):
            return None, None
        everywhere = self.args.save_on_each_node
        weights = fsdp.full_model_state(model, all_ranks=everywhere)
        optim = fsdp.full_optimizer_state(model, self.optimizer, all_ranks=everywhere) if with_optimizer and self.optimizer else None
        return weights, optim

    def _save_config_files(self, directory: Path) -> None:
        """The model's config (under its own class name) and the tokenizer, without weights."""
        model = unwrap_model(self.model)
        if hasattr(model, "config") and hasattr(model.config, "save_pretrained"):
            model.config.architectures = [fsdp.architecture_name(model)]
            model.config.save_pretrained(directory)
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(directory)

    def _save_model_files(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        model = unwrap_model(self.model)
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(directory, state_dict=state_dict, safe_serialization=self.args.save_safetensors)
            if self.fsdp_plan is not None and hasattr(model, "config"):  # name the model's class, not the sharded one
                model.config.architectures = [fsdp.architecture_name(model)]
                model.config.save_pretrained(directory)
        else:
            from safetensors.torch import save_file

            state = state_dict if state_dict is not None else model.state_dict()
            save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(directory)

    def _save_checkpoint(self) -> Path | None:
        if self.state.best_global_step == self.state.global_step and self.args.metric_for_best_model is not None:
            self.state.best_model_checkpoint = str(Path(self.args.output_dir) / f"{ckpt.PREFIX}-{self.state.global_step}")
        self.state.stateful_callbacks = {type(cb).__name__: cb.state() for cb in self.callback_handler.callbacks if cb.state()}
        path = None
        only_model = self.args.save_only_model
        weights, optim_state = self._full_states(with_optimizer=not only_model, checkpoint=True)
        engine = getattr(self, "deepspeed_engine", None)
        save_model = self._save_model_files if weights is None else (lambda d: self._save_model_files(d, weights))
        if engine is not None and not only_model:
            # every process writes its partitions of model, optimizer and scheduler beside the checkpoint;
            # the saving process moves them in before the checkpoint is marked complete
            from openformers.distributed.deepspeed import checkpoint_tag

            tag = checkpoint_tag(self.state.global_step)
            staging = Path(self.args.output_dir) / f"ds-{ckpt.PREFIX}-{self.state.global_step}"
            engine.save_checkpoint(str(staging), tag=tag)
            torch.distributed.barrier()

            def save_model(directory: Path, write=save_model, staging=staging, tag=tag) -> None:  # noqa: F811
                write(directory)
                os.replace(staging / tag, directory / tag)
                shutil.rmtree(staging, ignore_errors=True)
        plan = self.fsdp_plan
        if plan is not None and plan.sharded_checkpoint and fsdp.is_sharded(unwrap_model(self.model)):
            # SHARDED_STATE_DICT: each process writes its shards of model and optimizer (no gathering); the
            # saving process moves them into the checkpoint before it is marked complete
            model = unwrap_model(self.model)
            staging = Path(self.args.output_dir) / f"dcp-{ckpt.PREFIX}-{self.state.global_step}"
            fsdp.save_sharded_model(model, staging / f"{fsdp.SHARDED_MODEL_NAME}_0")
            if not only_model:
                fsdp.save_sharded_optimizer(model, self.optimizer, staging / "optimizer_0")
            torch.distributed.barrier()

            def save_model(directory: Path, staging=staging) -> None:  # noqa: F811
                self._save_config_files(directory)
                for part in staging.iterdir():
                    os.replace(part, directory / part.name)
                shutil.rmtree(staging, ignore_errors=True)
            weights = {}  # the optimizer is in the shards too
        if self.args.should_save:
            sharded = weights is not None
            path = ckpt.write_checkpoint(
                self.args.output_dir, self.state.global_step, save_model=save_model,
                optimizer=None if only_model or sharded else self.optimizer,
                scheduler=None if only_model or engine is not None else self.lr_scheduler,
                scaler=None if only_model else self.scaler, state=self.state, args_json=self.args.to_json_string(),
                extra={ckpt.OPTIMIZER_NAME: optim_state} if optim_state is not None else None,
            )
            ckpt.rotate_checkpoints(self.args.output_dir, self.args.save_total_limit, keep=self.state.best_model_checkpoint)
        if self.distributed:
            torch.distributed.barrier()
        self.control = self.callback_handler.call("on_save", self.args, self.state, self.control)
        if self.args.push_to_hub and self.args.hub_strategy in ("every_save", "checkpoint") and path is not None:
            self.push_to_hub(commit_message=f"checkpoint {self.state.global_step}")
        return path

    def _load_model_weights(self, directory: Path) -> None:
        from openformers.core.checkpoint import find_weight_files, iter_checkpoint

        model = unwrap_model(self.model)
        if (directory / f"{fsdp.SHARDED_MODEL_NAME}_0").is_dir():  # SHARDED_STATE_DICT, from any number of processes
            fsdp.load_sharded_model(model, directory / f"{fsdp.SHARDED_MODEL_NAME}_0")
            return
        if hasattr(model, "load_adapter_weights") and (directory / "adapter_model.safetensors").is_file():
            model.load_adapter_weights(directory)
            return
        state = dict(iter_checkpoint(find_weight_files(directory)))
        if fsdp.is_sharded(model):
            missing, unexpected = fsdp.load_full_model_state(model, state)
        else:
            result = model.load_state_dict(state, strict=False)
            missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        tied = set(getattr(model, "_tied_targets", lambda: set())())
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise ValueError(f"checkpoint {directory} does not fit the model: missing {missing}, unexpected {unexpected}")

    def _load_checkpoint(self, directory: Path) -> None:
        engine = getattr(self, "deepspeed_engine", None)
        if engine is not None:
            tags = sorted(p.name for p in directory.glob("global_step*") if p.is_dir())
            if not tags:
                raise ValueError(f"{directory} holds no DeepSpeed checkpoint (global_step*/): it was not written by "
                                 f"a DeepSpeed run; resume it without deepspeed=")
            loaded, _ = engine.load_checkpoint(str(directory), tag=tags[-1])
            if loaded is None:
                raise ValueError(f"DeepSpeed could not load {directory / tags[-1]}")
        else:
            self._load_model_weights(directory)
        if engine is None and (directory / "optimizer_0").is_dir():
            fsdp.load_sharded_optimizer(unwrap_model(self.model), self.optimizer, directory / "optimizer_0")
        elif engine is None and (directory / ckpt.OPTIMIZER_NAME).is_file():
            optim_state = ckpt.load_sidecar(directory / ckpt.OPTIMIZER_NAME)
            if fsdp.is_sharded(unwrap_model(self.model)) or any(isinstance(k, str) for k in optim_state.get("state", {})):
                # keyed by parameter name (written by a sharded run): fits any process count
                fsdp.load_optimizer_state(unwrap_model(self.model), self.optimizer, optim_state)
            else:
                self.optimizer.load_state_dict(optim_state)
        if engine is None and (directory / ckpt.SCHEDULER_NAME).is_file():
            self.lr_scheduler.load_state_dict(ckpt.load_sidecar(directory / ckpt.SCHEDULER_NAME))
        if self.scaler is not None and (directory / ckpt.SCALER_NAME).is_file():
            self.scaler.load_state_dict(ckpt.load_sidecar(directory / ckpt.SCALER_NAME))
        saved = TrainerState.load_from_json(directory / "trainer_state.json")
        for field_name in ("epoch", "global_step", "log_history", "best_metric", "best_global_step", "best_model_checkpoint",
                           "epoch_index", "steps_in_epoch", "num_input_tokens_seen", "total_flos", "stateful_callbacks"):
            setattr(self.state, field_name, getattr(saved, field_name))
        for cb in self.callback_handler.callbacks:
            if type(cb).__name__ in saved.stateful_callbacks:
                cb.load_state(saved.stateful_callbacks[type(cb).__name__])
        if self.args.ignore_data_skip:
            self.state.steps_in_epoch = 0
        if (directory / ckpt.RNG_NAME).is_file():
            ckpt.restore_rng_state(ckpt.load_sidecar(directory / ckpt.RNG_NAME))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model (and tokenizer) to ``output_dir`` (default: args.output_dir)."""
        weights, _ = self._full_states(with_optimizer=False)  # sharded training: every process takes part
        if not self.args.should_save:
            return
        directory = Path(output_dir or self.args.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model_files(directory, weights)
        (directory / ckpt.ARGS_NAME).write_text(self.args.to_json_string(), encoding="utf-8")
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub()

    def save_state(self) -> None:
        if self.args.should_save:
            Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
            self.state.save_to_json(Path(self.args.output_dir) / "trainer_state.json")
