"""RewardTrainer: a one-label sequence classifier trained on chosen/rejected pairs."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from openformers.rl.base import RLTrainerMixin, apply_peft, disable_dropout, load_model, load_tokenizer
from openformers.rl.configs import RewardConfig
from openformers.rl.data import _pad, preference_pairs
from openformers.rl.losses import reward_pairwise_loss
from openformers.training.evaluation import EvalPrediction
from openformers.training.trainer import Trainer


class RewardCollator:
    """Chosen sequences then rejected ones, right-padded into one [2b, s] batch (``margin`` passed through)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = [list(f["chosen_input_ids"]) for f in features] + [list(f["rejected_input_ids"]) for f in features]
        batch = {"input_ids": _pad(seqs, self.pad_token_id, multiple=self.pad_to_multiple_of),
                 "attention_mask": _pad([[1] * len(s) for s in seqs], 0, multiple=self.pad_to_multiple_of)}
        if "margin" in features[0]:
            batch["margin"] = torch.tensor([float(f["margin"]) for f in features])
        return batch


def reward_accuracy(pred: EvalPrediction) -> dict[str, float]:
    """Share of pairs whose chosen reward is above the rejected one (the RewardTrainer's metric)."""
    import numpy as np

    scores = np.asarray(pred.predictions)
    return {"accuracy": float((scores[:, 0] > scores[:, 1]).mean())}


class RewardTrainer(RLTrainerMixin, Trainer):
    """The Trainer with the pairwise (Bradley-Terry) loss; accuracy is its evaluation metric."""

    _extra_columns = ("chosen_input_ids", "rejected_input_ids", "margin")

    def __init__(self, model: nn.Module | str, args: RewardConfig | None = None, data_collator: Callable | None = None,
                 train_dataset: Any = None, eval_dataset: Any = None, processing_class: Any = None,
                 compute_metrics: Callable | None = None, callbacks: list | None = None,
                 optimizers: tuple = (None, None), preprocess_logits_for_metrics: Callable | None = None,
                 peft_config: Any = None, tokenizer: Any = None) -> None:
        if args is None:
            name = model if isinstance(model, str) else type(model).__name__
            args = RewardConfig(f"{str(name).rstrip('/').split('/')[-1]}-Reward")
        model = load_model(model, args, "AutoModelForSequenceClassification", num_labels=1)
        tok = load_tokenizer(processing_class, tokenizer, model)
        config = getattr(model, "config", None)
        if config is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tok.pad_token_id  # the classifier pools the last non-pad token
        if peft_config is not None and getattr(peft_config, "task_type", None) is None:
            peft_config.task_type = "SEQ_CLS"
        model = apply_peft(model, peft_config, args)
        if args.disable_dropout:
            disable_dropout(model)
        if data_collator is None:
            data_collator = RewardCollator(tok.pad_token_id, args.pad_to_multiple_of)
        self._init_metrics()
        super().__init__(model=model, args=args, data_collator=data_collator,
                         train_dataset=self._tokenize(train_dataset, tok, args),
                         eval_dataset=self._tokenize(eval_dataset, tok, args), processing_class=tok,
                         compute_metrics=compute_metrics if compute_metrics is not None else reward_accuracy,
                         callbacks=callbacks, optimizers=optimizers,
                         preprocess_logits_for_metrics=preprocess_logits_for_metrics)

    @staticmethod
    def _tokenize(dataset: Any, tok: Any, args: RewardConfig) -> Any:
        if dataset is None:
            return None
        out = []
        for example, t in preference_pairs(dataset, tok):
            row = {"chosen_input_ids": t["prompt_ids"] + t["chosen_ids"],
                   "rejected_input_ids": t["prompt_ids"] + t["rejected_ids"]}
            if args.max_length is not None:  # TRL drops pairs longer than max_length
                if max(len(row["chosen_input_ids"]), len(row["rejected_input_ids"])) > args.max_length:
                    continue
            if "margin" in example:
                row["margin"] = float(example["margin"])
            out.append(row)
        if not out:
            raise ValueError(f"every preference pair is longer than max_length={args.max_length}; raise max_length")
        return out

    def _count_items(self, batch: dict[str, Any]) -> int:
        return int(batch["input_ids"].shape[0]) // 2

    def _rewards(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = out["logits"] if hasattr(out, "keys") else out[0]
        return logits.squeeze(-1)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: int | torch.Tensor | None = None) -> Any:
        chosen, rejected = self._rewards(model, inputs).float().chunk(2)
        loss = reward_pairwise_loss(chosen, rejected, inputs.get("margin"), self.args.center_rewards_coefficient)
        with torch.no_grad():
            self._record(model, {"accuracy": (chosen > rejected).float().mean(), "margin": (chosen - rejected).mean(),
                                 "min_reward": torch.minimum(chosen, rejected).mean(),
                                 "max_reward": torch.maximum(chosen, rejected).mean()})
        if return_outputs:
            return loss, {"rewards_chosen": chosen, "rewards_rejected": rejected}
        return loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:
        inputs = self._to_device(inputs)
        with torch.no_grad(), self._autocast(evaluating=True):
            loss, out = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        logits = torch.stack([out["rewards_chosen"], out["rewards_rejected"]], dim=1)
        return loss.detach(), logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
