"""DPOTrainer: direct preference optimisation on prompt/chosen/rejected data."""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from openformers.rl.base import RLTrainerMixin, apply_peft, disable_dropout, is_peft, load_model, load_tokenizer
from openformers.rl.configs import DPOConfig
from openformers.rl.data import PreferenceCollator, preference_pairs
from openformers.rl.losses import dpo_loss, token_log_probs
from openformers.training.distributed import unwrap_model
from openformers.training.trainer import Trainer


def sequence_log_probs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the completion tokens of each row, and the per-token values [b, s - 1]."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logits = out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]
    per_token = token_log_probs(logits, batch["input_ids"])
    mask = batch["completion_mask"][:, 1:].to(per_token.dtype)
    return (per_token * mask).sum(-1), per_token


class DPOTrainer(RLTrainerMixin, Trainer):
    """The Trainer with the DPO loss. The reference is ``ref_model``; with none and a LoRA model,
    the same model with its adapter disabled (no second copy); with none otherwise, a frozen copy;
    with ``precompute_ref_log_probs=True``, the reference log-probabilities are computed once
    before training and kept with the dataset."""

    _extra_columns = ("prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps")

    def __init__(self, model: nn.Module | str, ref_model: nn.Module | str | None = None, args: DPOConfig | None = None,
                 data_collator: Callable | None = None, train_dataset: Any = None, eval_dataset: Any = None,
                 processing_class: Any = None, compute_metrics: Callable | None = None, callbacks: list | None = None,
                 optimizers: tuple = (None, None), preprocess_logits_for_metrics: Callable | None = None,
                 peft_config: Any = None, tokenizer: Any = None) -> None:
        if args is None:
            name = model if isinstance(model, str) else type(model).__name__
            args = DPOConfig(f"{str(name).rstrip('/').split('/')[-1]}-DPO")
        model = load_model(model, args)
        tok = load_tokenizer(processing_class, tokenizer, model)
        model = apply_peft(model, peft_config, args)
        if ref_model is not None:
            ref_model = load_model(ref_model, args)
            if ref_model is model:
                raise ValueError("ref_model is the model being trained; pass a separate copy, or ref_model=None")
        elif not is_peft(model) and not args.precompute_ref_log_probs:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        if args.disable_dropout:
            disable_dropout(model)
            if ref_model is not None:
                disable_dropout(ref_model)
        self.ref_model = ref_model
        self.beta = args.beta
        self.loss_types = list(args.loss_type)
        self.loss_weights = list(args.loss_weights or [1.0] * len(self.loss_types))
        pad = args.padding_value if args.padding_value is not None else tok.pad_token_id
        if data_collator is None:
            data_collator = PreferenceCollator(pad, pad_to_multiple_of=args.pad_to_multiple_of)
        train_dataset = self._tokenize(train_dataset, tok, args)
        eval_dataset = self._tokenize(eval_dataset, tok, args)
        self._init_metrics()
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=tok, compute_metrics=compute_metrics,
                         callbacks=callbacks, optimizers=optimizers,
                         preprocess_logits_for_metrics=preprocess_logits_for_metrics)
        if self.ref_model is not None and getattr(self.ref_model, "hf_device_map", None) is None:
            self.ref_model.to(self.device)
        if args.precompute_ref_log_probs:
            self.train_dataset = self._precompute(self.train_dataset)
            self.eval_dataset = self._precompute(self.eval_dataset)

    # -- data -----------------------------------------------------------------------------------
    @staticmethod
    def _tokenize(dataset: Any, tok: Any, args: DPOConfig) -> Any:
        if dataset is None:
            return None
        out = []
        for example, row in preference_pairs(dataset, tok):
            if args.max_length is not None:
                p = row["prompt_ids"]
                if len(p) >= args.max_length:
                    p = p[-(args.max_length - 1):] if args.truncation_mode == "keep_end" else p[: args.max_length - 1]
                room = args.max_length - len(p)
                row = {"prompt_ids": p, "chosen_ids": row["chosen_ids"][:room], "rejected_ids": row["rejected_ids"][:room]}
            for key in ("ref_chosen_logps", "ref_rejected_logps"):
                if key in example:
                    row[key] = example[key]
            out.append(row)
        return out

    @contextlib.contextmanager
    def _reference(self) -> Any:
        """The reference model for the duration of the block (the adapter disabled when it is the policy)."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        model = unwrap_model(self.model)
        if is_peft(model):
            with model.disable_adapter():
                yield model
        else:  # precomputing before training: the policy is still the initial model
            yield model

    def _precompute(self, dataset: Any) -> Any:
        if dataset is None:
            return None
        size = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
        was_training = self.model.training
        self.model.eval()
        out = []
        with torch.no_grad(), self._autocast(evaluating=True), self._reference() as ref:
            for start in range(0, len(dataset), size):
                chunk = dataset[start:start + size]
                batch = self._to_device(self.data_collator(chunk))
                logps, _ = sequence_log_probs(ref, batch)
                chosen, rejected = logps.float().chunk(2)
                for row, c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
                    out.append({**row, "ref_chosen_logps": c, "ref_rejected_logps": r})
        self.model.train(was_training)
        return out

    # -- loss -----------------------------------------------------------------------------------
    def _count_items(self, batch: dict[str, Any]) -> int:
        return int(batch["input_ids"].shape[0]) // 2

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: int | torch.Tensor | None = None) -> Any:
        logps, _ = sequence_log_probs(model, inputs)
        chosen, rejected = logps.chunk(2)
        if "ref_chosen_logps" in inputs:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            with torch.no_grad(), self._reference() as ref:
                ref_logps, _ = sequence_log_probs(ref, inputs)
            ref_chosen, ref_rejected = ref_logps.chunk(2)
        lengths = inputs["completion_mask"].sum(-1).to(logps.dtype)
        chosen_len, rejected_len = lengths.chunk(2)
        loss = logps.new_zeros(())
        for loss_type, weight in zip(self.loss_types, self.loss_weights):
            per_pair = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=self.beta, loss_type=loss_type,
                                label_smoothing=self.args.label_smoothing, chosen_lengths=chosen_len,
                                rejected_lengths=rejected_len)
            loss = loss + per_pair.mean() * weight
        with torch.no_grad():
            chosen_rewards = self.beta * (chosen - ref_chosen).detach()
            rejected_rewards = self.beta * (rejected - ref_rejected).detach()
            self._record(model, {
                "rewards/chosen": chosen_rewards.mean(), "rewards/rejected": rejected_rewards.mean(),
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
                "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
                "logps/chosen": chosen.detach().mean(), "logps/rejected": rejected.detach().mean(),
            })
        if return_outputs:
            return loss, {"chosen_logps": chosen.detach(), "rejected_logps": rejected.detach()}
        return loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:
        inputs = self._to_device(inputs)
        with torch.no_grad(), self._autocast(evaluating=True):
            loss, out = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        logits = torch.stack([out["chosen_logps"], out["rejected_logps"]], dim=1)
        return loss.detach(), logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
