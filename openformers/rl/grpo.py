"""GRPOTrainer: group relative policy optimisation with rollouts from our own ``generate``.

Every optimizer step samples ``num_generations`` completions per prompt (batched sampling on the
model being trained, adapter included), scores them with the reward functions, turns the scores
into advantages relative to each prompt's group, then takes the clipped-surrogate loss (plus
``beta`` times the KL to the reference). Micro-batches are weighted so an accumulated step
normalises as TRL's ``loss_type`` says (tokens of the whole step for ``dapo``).

With ``num_iterations = n > 1`` each batch of rollouts serves ``n`` optimizer steps, as in TRL: the
loader hands every step's prompts ``n`` times over (an epoch has ``n`` times the steps; an incomplete
last step is dropped), the rollouts are made on the first of those steps, with the log-probabilities
of the policy that sampled them (``old_per_token_logps``), and the later steps weigh each token by
the ratio of the current policy to that old one, clipped to ``[1 - epsilon, 1 + epsilon_high]``.
A run resumed between those steps makes new rollouts, as TRL does.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from openformers.rl.base import RLTrainerMixin, apply_peft, disable_dropout, is_peft, load_model, load_tokenizer
from openformers.rl.configs import GRPOConfig
from openformers.rl.data import _pad, is_conversational
from openformers.rl.losses import group_advantages, grpo_loss, selective_log_softmax
from openformers.training.distributed import unwrap_model
from openformers.training.trainer import Trainer

RewardFunc = Callable[..., list[float]] | nn.Module | str


def _rows_collator(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(features)


class _RepeatedSteps:
    """A training loader whose every run of ``accum`` batches (one optimizer step) comes ``times`` times
    in a row; an incomplete last run is dropped. ``skip`` counts batches of the repeated sequence."""

    def __init__(self, make: Callable[[int], Any], num_batches: int, accum: int, times: int, skip: int) -> None:
        self.make, self.accum, self.times, self.skip = make, accum, times, skip
        self.steps = num_batches // accum

    def __len__(self) -> int:
        return self.steps * self.accum * self.times

    def __iter__(self) -> Iterator[Any]:
        per_step = self.accum * self.times
        done_steps, offset = divmod(self.skip, per_step)
        batches = iter(self.make(done_steps * self.accum))
        for _ in range(self.steps - done_steps):
            step = list(itertools.islice(batches, self.accum))
            if len(step) < self.accum:
                return
            for j in range(offset, per_step):
                yield step[j % self.accum]
            offset = 0


class GRPOTrainer(RLTrainerMixin, Trainer):
    """``per_device_train_batch_size`` counts completions (as in TRL): each micro-batch holds
    ``per_device_train_batch_size // num_generations`` prompts with all their completions."""

    def __init__(self, model: nn.Module | str, reward_funcs: RewardFunc | list[RewardFunc], args: GRPOConfig | None = None,
                 train_dataset: Any = None, eval_dataset: Any = None, processing_class: Any = None,
                 reward_processing_classes: Any = None, callbacks: list | None = None, optimizers: tuple = (None, None),
                 peft_config: Any = None, tokenizer: Any = None, ref_model: nn.Module | None = None) -> None:
        if args is None:
            name = model if isinstance(model, str) else type(model).__name__
            args = GRPOConfig(f"{str(name).rstrip('/').split('/')[-1]}-GRPO")
        if args.per_device_train_batch_size % args.num_generations:
            raise ValueError(f"per_device_train_batch_size ({args.per_device_train_batch_size}) counts completions and "
                             f"must be a multiple of num_generations ({args.num_generations})")
        model = load_model(model, args)
        tok = load_tokenizer(processing_class, tokenizer, model)
        tok.padding_side = "left"
        model = apply_peft(model, peft_config, args)
        if args.disable_dropout:
            disable_dropout(model)
        funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        self.reward_funcs: list[Any] = [load_model(f, args, "AutoModelForSequenceClassification", num_labels=1)
                                        if isinstance(f, str) else f for f in funcs]
        rpcs = reward_processing_classes if isinstance(reward_processing_classes, list) else \
            [reward_processing_classes] * len(self.reward_funcs)
        self.reward_processing_classes = [
            (load_tokenizer(p, None, f) if isinstance(f, nn.Module) else p) for p, f in zip(rpcs, self.reward_funcs)]
        for f in self.reward_funcs:
            if isinstance(f, nn.Module):
                f.eval().requires_grad_(False)
        weights = args.reward_weights if args.reward_weights is not None else [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(weights)} entries for {len(self.reward_funcs)} reward functions")
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        self.ref_model = None
        if args.beta != 0.0:
            if ref_model is not None:
                self.ref_model = ref_model
            elif not is_peft(model):
                self.ref_model = copy.deepcopy(model)
            if self.ref_model is not None:
                self.ref_model.eval().requires_grad_(False)
        self.num_generations = args.num_generations
        self._init_metrics()
        super().__init__(model=model, args=args, data_collator=_rows_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=tok, callbacks=callbacks, optimizers=optimizers)
        if self.ref_model is not None:
            self.ref_model.to(self.device)
        for f in self.reward_funcs:
            if isinstance(f, nn.Module):
                f.to(self.device)

    # -- data: prompts per micro-batch, rollouts per optimizer step ------------------------------
    def _collate(self, features: list[Any]) -> Any:
        return [dict(f) for f in features]

    def _loader(self, dataset: Any, batch_size: int, **kw: Any) -> Any:
        prompts = max(1, batch_size // self.num_generations)
        times, accum = self.args.num_iterations, self.args.gradient_accumulation_steps
        if times == 1 or not kw.get("shuffle"):  # evaluation: each batch once
            return super()._loader(dataset, prompts, **kw)
        skip = kw.pop("skip_batches", 0)
        make = lambda skip_batches: super(GRPOTrainer, self)._loader(dataset, prompts, skip_batches=skip_batches, **kw)  # noqa: E731
        return _RepeatedSteps(make, len(make(0)), accum, times, skip)

    def _update(self, model: nn.Module, group: list[Any]) -> tuple[float, int, float | None]:
        if self.args.num_iterations == 1:
            return super()._update(model, self._rollouts(group))
        # the loader repeats each step's prompts num_iterations times; the rollouts are made once
        if getattr(self, "_buffered", None) is None or self.state.global_step % self.args.num_iterations == 0:
            self._buffered = self._rollouts(group)
        return super()._update(model, self._buffered)

    def _rollouts(self, group: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        batches = [self._generate_and_score(rows) for rows in group]
        total_tokens = sum(int(b["completion_mask"].sum()) for b in batches)
        for b in batches:
            b["num_items_in_batch"] = total_tokens
        return batches

    def _count_items(self, batch: Any) -> int:
        if isinstance(batch, list):  # prompts not yet rolled out (evaluation)
            return len(batch) * self.num_generations
        if self.args.loss_type == "dapo":
            return int(batch["completion_mask"].sum())
        return int(batch["completion_ids"].shape[0])  # grpo, bnpo, dr_grpo: each micro-batch weighs the same

    def _prompt_texts(self, rows: list[dict[str, Any]]) -> list[Any]:
        prompts = []
        for r in rows:
            if "prompt" not in r:
                raise ValueError(f"GRPO dataset: each example needs a 'prompt' column; got {sorted(r)}")
            prompts.append(r["prompt"])
        return prompts

    def _encode_prompts(self, prompts: list[Any]) -> list[list[int]]:
        tok = self.processing_class
        out = []
        for p in prompts:
            if isinstance(p, list):
                ids = list(tok.apply_chat_template(p, add_generation_prompt=True))
            else:
                ids = list(tok(p)["input_ids"])
            if self.args.max_prompt_length is not None:
                ids = ids[-self.args.max_prompt_length:]
            out.append(ids)
        return out

    @torch.no_grad()
    def _generate_and_score(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        args, tok, g = self.args, self.processing_class, self.num_generations
        prompts = self._prompt_texts(rows)
        prompt_ids = [ids for ids in self._encode_prompts(prompts) for _ in range(g)]
        pad = tok.pad_token_id
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompt_ids):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        model = unwrap_model(self.model)
        was_training = model.training
        model.eval()
        gen_kwargs = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k or None,
                          max_new_tokens=args.max_completion_length, pad_token_id=pad,
                          eos_token_id=tok.eos_token_id)
        if args.min_p is not None:
            gen_kwargs["min_p"] = args.min_p
        if args.repetition_penalty != 1.0:
            gen_kwargs["repetition_penalty"] = args.repetition_penalty
        gen_kwargs.update(args.generation_kwargs or {})
        with self._autocast():
            out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
        model.train(was_training)
        completion_ids = out[:, width:].clone()  # generate runs in inference mode: a normal tensor for autograd
        is_eos = completion_ids == tok.eos_token_id
        first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], is_eos.shape[1], dtype=torch.long))
        positions = torch.arange(completion_ids.shape[1], device=completion_ids.device)
        completion_mask = (positions.unsqueeze(0) <= first_eos.unsqueeze(1)).long()
        truncated = ~is_eos.any(1)
        if args.mask_truncated_completions:
            completion_mask = completion_mask * (~truncated).unsqueeze(1).long()
        completion_lists = [c[: int(m.sum())].tolist() for c, m in zip(completion_ids, completion_mask)]
        texts = tok.batch_decode(completion_lists, skip_special_tokens=True)
        expanded_prompts = [p for p in prompts for _ in range(g)]
        if prompts and isinstance(prompts[0], list):
            completions: list[Any] = [[{"role": "assistant", "content": t}] for t in texts]
        else:
            completions = texts
        extra = {k: [r[k] for r in rows for _ in range(g)] for k in rows[0] if k != "prompt"}
        rewards_per_func = self._rewards(expanded_prompts, completions, completion_lists, extra)
        rewards = (rewards_per_func * self.reward_weights.unsqueeze(0)).nansum(1)
        advantages = group_advantages(rewards, g, args.scale_rewards)
        batch: dict[str, Any] = {"prompt_ids": ids, "prompt_mask": mask, "completion_ids": completion_ids,
                                 "completion_mask": completion_mask, "advantages": advantages.to(self.device)}
        if args.beta != 0.0:
            batch["ref_per_token_logps"] = self._ref_logps(batch)
        if was_training and args.num_iterations > 1:  # the sampling policy, for the ratios of the later steps
            with self._autocast():
                batch["old_per_token_logps"] = self._per_token_logps(model, batch)
        stats = {"reward": rewards.mean(), "reward_std": rewards.view(-1, g).std(1).mean(),
                 "completions/mean_length": completion_mask.sum(1).float().mean(),
                 "completions/clipped_ratio": truncated.float().mean()}
        for i, f in enumerate(self.reward_funcs):
            name = getattr(f, "__name__", None) or type(f).__name__
            stats[f"rewards/{name}/mean"] = torch.nanmean(rewards_per_func[:, i])
        self._record(model, stats)
        return batch

    def _rewards(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]],
                 extra: dict[str, list[Any]]) -> torch.Tensor:
        out = torch.zeros(len(prompts), len(self.reward_funcs))
        for i, (func, rtok) in enumerate(zip(self.reward_funcs, self.reward_processing_classes)):
            if isinstance(func, nn.Module):
                if is_conversational({"prompt": prompts[0]}):
                    texts = [rtok.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
                else:
                    texts = [p + c for p, c in zip(prompts, completions)]
                enc = rtok(texts, padding=True, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                logits = func(**enc)
                logits = logits["logits"] if hasattr(logits, "keys") else logits[0]
                out[:, i] = logits[:, 0].float().cpu()
            else:
                values = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **extra)
                if len(values) != len(prompts):
                    raise ValueError(f"reward function {getattr(func, '__name__', func)!r} returned {len(values)} rewards "
                                     f"for {len(prompts)} completions")
                out[:, i] = torch.tensor([float("nan") if v is None else float(v) for v in values])
        return out

    # -- loss -----------------------------------------------------------------------------------
    def _per_token_logps(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        out = model(input_ids=input_ids, attention_mask=attention, use_cache=False)
        logits = out["logits"] if hasattr(out, "keys") else out[0]
        n = batch["completion_ids"].shape[1]
        logits = logits[:, -n - 1:-1] / self.args.temperature
        return selective_log_softmax(logits, batch["completion_ids"])

    @contextlib.contextmanager
    def _reference(self) -> Any:
        if self.ref_model is not None:
            yield self.ref_model
            return
        model = unwrap_model(self.model)
        with model.disable_adapter():
            yield model

    def _ref_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad(), self._reference() as ref, self._autocast():
            return self._per_token_logps(ref, batch)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: int | torch.Tensor | None = None) -> Any:
        logps = self._per_token_logps(model, inputs)
        args = self.args
        num_items = inputs["completion_mask"].sum() if args.loss_type != "dapo" else None
        old = inputs.get("old_per_token_logps")  # absent when each rollout serves one step: ratio 1
        loss, kl = grpo_loss(logps, logps.detach() if old is None else old, inputs["advantages"], inputs["completion_mask"],
                             ref_per_token_logps=inputs.get("ref_per_token_logps"), beta=args.beta,
                             epsilon_low=args.epsilon, epsilon_high=args.epsilon_high, delta=args.delta,
                             loss_type=args.loss_type, max_completion_length=args.max_completion_length,
                             num_items=num_items, use_bias_correction_kl=args.use_bias_correction_kl)
        if kl is not None:
            mask = inputs["completion_mask"].to(kl.dtype)
            self._record(model, {"kl": ((kl.detach() * mask).sum() / mask.sum().clamp(min=1))})
        return (loss, {}) if return_outputs else loss

    def prediction_step(self, model: nn.Module, inputs: Any, prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[torch.Tensor | None, Any, Any]:
        batch = self._generate_and_score(inputs)
        with torch.no_grad(), self._autocast(evaluating=True):
            loss = self.compute_loss(model, batch)
        return loss.detach(), None, None
