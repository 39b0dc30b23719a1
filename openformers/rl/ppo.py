"""PPOTrainer with the classic TRL API: ``PPOTrainer(config, model, ref_model, tokenizer)`` and
``step(queries, responses, scores)``.

A step scores the responses with the policy, the reference and the value head, turns the scores
into per-token rewards with a KL penalty to the reference, estimates advantages with GAE, then runs
``ppo_epochs`` passes of clipped policy and value updates over shuffled mini-batches. It returns
the classic statistics dict (``ppo/loss/total``, ``objective/kl``, ``ppo/mean_scores``, ...).
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from openformers.rl.base import is_peft
from openformers.rl.data import _pad
from openformers.rl.losses import (
    gae_advantages,
    kl_penalised_rewards,
    masked_mean,
    masked_var,
    ppo_losses,
    selective_log_softmax,
)
from openformers.rl.value_head import AutoModelForCausalLMWithValueHead
from openformers.training.arguments import TrainingArguments
from openformers.training.trainer import Trainer


@dataclass(init=False)
class PPOConfig(TrainingArguments):
    """The classic PPO options (TRL 0.x names and defaults) on top of TrainingArguments.

    ``mini_batch_size`` larger than ``batch_size`` (the default 128 with a small batch, as in
    ``PPOConfig(batch_size=8)``) is read as one mini-batch of the whole batch."""

    exp_name: str = "ppo"
    seed: int = 0
    steps: int = 20000
    learning_rate: float = 1.41e-5
    lr_scheduler_type: str = "constant"
    adap_kl_ctrl: bool = True
    init_kl_coef: float = 0.2
    kl_penalty: str = "kl"
    target: float = 6.0
    horizon: float = 10000.0
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    batch_size: int = 128
    forward_batch_size: int | None = None
    mini_batch_size: int = 128
    ppo_epochs: int = 4
    max_grad_norm: float | None = None  # type: ignore[assignment]
    early_stopping: bool = False
    target_kl: float = 1.0
    ratio_threshold: float = 10.0
    use_score_scaling: bool = False
    use_score_norm: bool = False
    score_clip: float | None = None
    whiten_rewards: bool = False
    log_with: str | None = None
    model_name: str | None = None
    query_dataset: str | None = None
    reward_model: str | None = None
    tracker_project_name: str = "trl"
    disable_tqdm: bool | None = True
    save_strategy: str = "no"

    def __post_init__(self) -> None:
        if self.log_with is not None and self.report_to in (None, "none", ["none"], []):
            self.report_to = self.log_with
        super().__post_init__()
        if self.batch_size < 1 or self.mini_batch_size < 1 or self.ppo_epochs < 1:
            raise ValueError("PPOConfig: batch_size, mini_batch_size and ppo_epochs must be >= 1")
        if self.mini_batch_size > self.batch_size:
            self.mini_batch_size = self.batch_size
        self.backward_batch_size = self.mini_batch_size * self.gradient_accumulation_steps
        if self.batch_size % self.backward_batch_size:
            raise ValueError(f"PPOConfig: batch_size ({self.batch_size}) must be a multiple of mini_batch_size * "
                             f"gradient_accumulation_steps ({self.backward_batch_size})")
        if self.kl_penalty not in ("kl", "abs", "mse"):
            raise ValueError(f"PPOConfig: kl_penalty={self.kl_penalty!r} must be 'kl', 'abs' or 'mse'")
        if self.forward_batch_size is not None:  # the old name of mini_batch_size for the scoring passes
            warnings.warn("forward_batch_size is deprecated; the scoring passes use mini_batch_size", FutureWarning,
                          stacklevel=2)


class AdaptiveKLController:
    """The KL coefficient moved toward ``target`` KL (Ziegler et al.): proportional error clipped to +-0.2."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current: float, n_steps: int) -> None:
        error = float(np.clip(current / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current: float, n_steps: int) -> None:
        pass


class _RunningMoments:
    """Running mean and standard deviation of the scores (``use_score_scaling``)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-24

    def update(self, xs: torch.Tensor) -> tuple[float, float]:
        xs = xs.double()
        batch_mean, batch_var, n = float(xs.mean()), float(xs.var(unbiased=False)), xs.numel()
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var, self.count = m2 / total, total
        return batch_mean, float(xs.std()) if n > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var * self.count / max(self.count - 1, 1))


class PPOTrainer(Trainer):
    """Classic PPO for causal LMs; ``step`` is one PPO update on a batch of rollouts."""

    def __init__(self, config: PPOConfig | None = None, model: nn.Module | None = None, ref_model: nn.Module | None = None,
                 tokenizer: Any = None, dataset: Any = None, optimizer: torch.optim.Optimizer | None = None,
                 data_collator: Callable | None = None, num_shared_layers: int | None = None,
                 lr_scheduler: Any = None, processing_class: Any = None) -> None:
        config = config if config is not None else PPOConfig()
        if not isinstance(config, PPOConfig):
            raise TypeError(f"PPOTrainer's first argument is a PPOConfig, got {type(config).__name__}")
        if model is None:
            raise ValueError("PPOTrainer needs a model (a causal LM, or one with a value head)")
        if num_shared_layers is not None:
            raise ValueError("num_shared_layers is not supported: pass ref_model=None for a frozen copy "
                             "(or a LoRA model, whose disabled adapter is the reference)")
        if not isinstance(model, AutoModelForCausalLMWithValueHead):
            model = AutoModelForCausalLMWithValueHead(model)  # the value head added as TRL adds it
        self.config = config
        if ref_model is None:
            self.ref_model = None if is_peft(model.pretrained_model) else copy.deepcopy(model.pretrained_model)
        else:
            self.ref_model = ref_model.pretrained_model if isinstance(ref_model, AutoModelForCausalLMWithValueHead) \
                else ref_model
        if self.ref_model is not None:
            self.ref_model.eval().requires_grad_(False)
        super().__init__(model=model, args=config, processing_class=processing_class, tokenizer=tokenizer,
                         optimizers=(optimizer, lr_scheduler))
        if self.ref_model is not None:
            self.ref_model.to(self.device)
        if self.processing_class is None:
            raise ValueError("PPOTrainer needs the tokenizer (fourth argument): it pads the batches")
        tok = self.processing_class
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.eos_token_id = tok.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither pad_token nor eos_token; set tokenizer.pad_token")
        self.kl_ctl = AdaptiveKLController(config.init_kl_coef, config.target, config.horizon) if config.adap_kl_ctrl \
            else FixedKLController(config.init_kl_coef)
        self.create_optimizer()
        self.create_scheduler(max(config.steps, 1))
        self.current_device = self.device
        self.running = _RunningMoments()
        self.dataset = dataset
        self.dataloader = None
        if dataset is not None:
            from torch.utils.data import DataLoader

            self.dataloader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=data_collator or _columns_collator)
        self.state.global_step = 0

    # -- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, query_tensor: torch.Tensor | list[torch.Tensor], length_sampler: Callable[[], int] | None = None,
                 batch_size: int = 4, return_prompt: bool = True, generate_ref_response: bool = False,
                 remove_padding: bool = True, **generation_kwargs: Any) -> Any:
        """Sample responses to one query [n] or a list of them (batched, left-padded)."""
        single = isinstance(query_tensor, torch.Tensor)
        queries = [_one_row(query_tensor, "query_tensor")] if single else [_one_row(q, "query_tensor") for q in query_tensor]
        generation_kwargs.setdefault("pad_token_id", self.pad_token_id)
        out, ref_out = [], []
        for start in range(0, len(queries), batch_size):
            chunk = queries[start:start + batch_size]
            if length_sampler is not None:
                generation_kwargs["max_new_tokens"] = int(length_sampler())
            width = max(len(q) for q in chunk)
            ids = torch.full((len(chunk), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, q in enumerate(chunk):
                ids[i, width - len(q):] = q
                mask[i, width - len(q):] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            self.model.eval()
            gen = self.model.pretrained_model.generate(input_ids=ids, attention_mask=mask, **generation_kwargs)
            ref_gen = None
            if generate_ref_response:
                with self._reference() as ref:
                    ref_gen = ref.generate(input_ids=ids, attention_mask=mask, **generation_kwargs)
            for rows, target in ((gen, out), (ref_gen, ref_out)):
                if rows is None:
                    continue
                for i, q in enumerate(chunk):
                    row = rows[i] if return_prompt else rows[i, width:]
                    if return_prompt:
                        row = row[width - len(q):]
                    if remove_padding:
                        row = _strip_trailing(row, self.pad_token_id, keep=len(q) if return_prompt else 0, eos=self.eos_token_id)
                    target.append(row)
        if single:
            return (out[0], ref_out[0]) if generate_ref_response else out[0].unsqueeze(0)
        return (out, ref_out) if generate_ref_response else out

    # -- the PPO step ---------------------------------------------------------------------------
    def step(self, queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor],
             scores: Sequence[float | torch.Tensor], response_masks: Sequence[torch.Tensor] | None = None) -> dict[str, Any]:
        """One PPO update on ``batch_size`` (query, response, score) triples; returns the statistics."""
        timing: dict[str, float] = {}
        t0 = time.time()
        queries, responses, scores_t = self._check_inputs(queries, responses, scores)
        cfg = self.config
        if cfg.use_score_scaling:
            mean, std = self.running.update(scores_t)
            scores_t = (scores_t - (self.running.mean if cfg.use_score_norm else 0.0)) / (self.running.std + 1e-8)
        if cfg.score_clip is not None:
            scores_t = scores_t.clamp(-cfg.score_clip, cfg.score_clip)
        batch = self._batch(queries, responses, response_masks)
        t = time.time()
        with torch.no_grad():
            logprobs, values, logits_entropy = self._forward(self.model, batch, with_values=True, train=False)
            ref_logprobs = self._ref_logprobs(batch)
        timing["time/ppo/forward_pass"] = time.time() - t
        mask = batch["mask"]
        t = time.time()
        rewards, kl = kl_penalised_rewards(scores_t.to(self.device), logprobs, ref_logprobs, mask, self.kl_ctl.value,
                                           cfg.kl_penalty)
        non_score = -self.kl_ctl.value * kl
        if cfg.whiten_rewards:
            from openformers.rl.losses import masked_whiten

            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae_advantages(values, rewards, mask, cfg.gamma, cfg.lam)
        timing["time/ppo/compute_advantages"] = time.time() - t
        t = time.time()
        all_stats: list[dict[str, torch.Tensor]] = []
        n = len(queries)
        early_stop = False
        self.model.train()
        for _ in range(cfg.ppo_epochs):
            if early_stop:
                break
            order = torch.randperm(n).tolist()
            for b_start in range(0, n, cfg.backward_batch_size):
                backward_idx = order[b_start:b_start + cfg.backward_batch_size]
                for m_start in range(0, len(backward_idx), cfg.mini_batch_size):
                    idx = torch.tensor(backward_idx[m_start:m_start + cfg.mini_batch_size], device=self.device)
                    mb = {k: v[idx] for k, v in batch.items()}
                    new_logprobs, vpreds, _ = self._forward(self.model, mb, with_values=True, train=True)
                    pg_loss, vf_loss, loss, stats = ppo_losses(
                        new_logprobs, logprobs[idx], vpreds, values[idx], advantages[idx], returns[idx], mb["mask"],
                        cliprange=cfg.cliprange, cliprange_value=cfg.cliprange_value, vf_coef=cfg.vf_coef)
                    if stats["policy/ratio"] > cfg.ratio_threshold:  # a wild ratio: skip this mini-batch
                        loss = loss * 0.0
                    (loss / cfg.gradient_accumulation_steps).backward()
                    stats.update({"loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(),
                                  "loss/total": loss.detach(),
                                  "policy/entropy": logits_entropy[idx].mul(mb["mask"]).sum() / mb["mask"].sum().clamp(min=1),
                                  "policy/advantages_mean": masked_mean(advantages[idx], mb["mask"]),
                                  "returns/mean": masked_mean(returns[idx], mb["mask"]),
                                  "returns/var": masked_var(returns[idx], mb["mask"]),
                                  "val/vpred": masked_mean(vpreds.detach(), mb["mask"]),
                                  "val/error": masked_mean((vpreds.detach() - returns[idx]) ** 2, mb["mask"]),
                                  "val/mean": masked_mean(values[idx], mb["mask"]),
                                  "val/var": masked_var(values[idx], mb["mask"])})
                    all_stats.append(stats)
                if cfg.max_grad_norm:
                    self._clip_grad_norm(cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if cfg.early_stopping and float(all_stats[-1]["policy/policykl"]) > 1.5 * cfg.target_kl:
                    early_stop = True
                    break
        timing["time/ppo/optimize_step"] = time.time() - t
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        mean_kl = float((kl * mask).sum(1).mean())
        stats = self._stats(all_stats, scores_t, kl, non_score, logprobs, ref_logprobs, mask, advantages, batch)
        stats["objective/kl_coef"] = self.kl_ctl.value
        self.kl_ctl.update(mean_kl, cfg.batch_size)
        timing["time/ppo/total"] = time.time() - t0
        stats.update(timing)
        stats["ppo/learning_rate"] = self._current_lr()
        self.state.global_step += 1
        return stats

    def _check_inputs(self, queries: Any, responses: Any, scores: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        for name, value in (("queries", queries), ("responses", responses), ("scores", scores)):
            if isinstance(value, torch.Tensor) and name != "scores":
                raise TypeError(f"step(): {name} must be a list of tensors (one per sample), got one tensor; "
                                f"use list({name})")
            if not isinstance(value, (list, tuple, torch.Tensor)):
                raise TypeError(f"step(): {name} must be a list, got {type(value).__name__}")
        if not (len(queries) == len(responses) == len(scores)):
            raise ValueError(f"step(): {len(queries)} queries, {len(responses)} responses and {len(scores)} scores; "
                             "give one of each per sample")
        if len(queries) != self.config.batch_size:
            raise ValueError(f"step(): the batch has {len(queries)} samples but PPOConfig(batch_size="
                             f"{self.config.batch_size}); pass exactly batch_size samples")
        qs = [_one_row(q, f"queries[{i}]") for i, q in enumerate(queries)]
        rs = []
        for i, (q, r) in enumerate(zip(qs, responses)):
            r = _one_row(r, f"responses[{i}]")
            # model.generate(query) returns the query followed by the new tokens: keep the new tokens
            if len(r) > len(q) and torch.equal(r[: len(q)].cpu(), q.cpu()):
                r = r[len(q):]
                r = _strip_trailing(r, self.pad_token_id, keep=1, eos=self.eos_token_id)
            if len(r) == 0:
                raise ValueError(f"step(): responses[{i}] has no token beyond its query; generate at least one token")
            rs.append(r)
        values = []
        for i, s in enumerate(scores):
            if isinstance(s, torch.Tensor):
                if s.numel() != 1:
                    raise ValueError(f"step(): scores[{i}] has {s.numel()} values; give one scalar score per sample")
                s = s.reshape(()).float().cpu()
            elif isinstance(s, (int, float, np.floating, np.integer)) and not isinstance(s, bool):
                s = torch.tensor(float(s))
            else:
                raise TypeError(f"step(): scores[{i}] is a {type(s).__name__}; give a float or a one-value tensor")
            values.append(s)
        return qs, rs, torch.stack(values)

    def _batch(self, queries: list[torch.Tensor], responses: list[torch.Tensor],
               response_masks: Sequence[torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Right-padded ``query + response`` rows; ``mask`` [b, s - 1] marks the log-probabilities of response tokens."""
        seqs = [torch.cat([q.cpu(), r.cpu()]).tolist() for q, r in zip(queries, responses)]
        ids = _pad(seqs, self.pad_token_id)
        attention = _pad([[1] * len(s) for s in seqs], 0)
        mask = torch.zeros(ids.shape[0], ids.shape[1] - 1)
        for i, (q, r) in enumerate(zip(queries, responses)):
            start = len(q) - 1
            mask[i, start:start + len(r)] = 1
            if response_masks is not None:
                mask[i, start:start + len(r)] *= response_masks[i].to(mask.dtype).cpu()
        return {"input_ids": ids.to(self.device), "attention_mask": attention.to(self.device), "mask": mask.to(self.device)}

    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor], with_values: bool, train: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not train:
            model.eval()
        with self._autocast():
            logits, _, values = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        logits = logits[:, :-1].float()
        logprobs = selective_log_softmax(logits, batch["input_ids"][:, 1:])
        with torch.no_grad():
            p = torch.softmax(logits.detach(), -1)
            entropy = torch.logsumexp(logits.detach(), -1) - (p * logits.detach()).sum(-1)
        return logprobs, values[:, :-1].float(), entropy

    def _reference(self) -> Any:
        import contextlib

        if self.ref_model is not None:
            return contextlib.nullcontext(self.ref_model)
        peft_model = self.model.pretrained_model

        @contextlib.contextmanager
        def disabled() -> Any:
            with peft_model.disable_adapter():
                yield peft_model

        return disabled()

    def _ref_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._reference() as ref, self._autocast():
            ref.eval()
            out = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        logits = (out["logits"] if hasattr(out, "keys") else out[0])[:, :-1].float()
        return selective_log_softmax(logits, batch["input_ids"][:, 1:])

    def _stats(self, all_stats: list[dict[str, torch.Tensor]], scores: torch.Tensor, kl: torch.Tensor,
               non_score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
               advantages: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        per_seq_kl = (kl * mask).sum(1)
        stats: dict[str, Any] = {
            "objective/kl": float(per_seq_kl.mean()),
            "objective/kl_dist": per_seq_kl.cpu().numpy(),
            "objective/logprobs": logprobs.cpu().numpy(),
            "objective/ref_logprobs": ref_logprobs.cpu().numpy(),
            "objective/entropy": float((-logprobs * mask).sum(1).mean()),
            "ppo/mean_non_score_reward": float((non_score * mask).sum(1).mean()),
            "ppo/mean_scores": float(scores.mean()),
            "ppo/std_scores": float(scores.std()) if scores.numel() > 1 else 0.0,
            "tokens/queries_len_mean": float((batch["attention_mask"].sum(1) - mask.sum(1)).float().mean()),
            "tokens/responses_len_mean": float(mask.sum(1).mean()),
            "ppo/policy/advantages": advantages[mask.bool()].cpu().numpy(),
        }
        keys = all_stats[0].keys() if all_stats else []
        for key in keys:
            stats[f"ppo/{key}"] = float(torch.stack([s[key].float() for s in all_stats]).mean())
        stats["ppo/val/var_explained"] = 1 - stats.get("ppo/val/error", 0.0) / max(stats.get("ppo/returns/var", 0.0), 1e-8)
        return stats

    # -- logging and saving ---------------------------------------------------------------------
    def log_stats(self, stats: dict[str, Any], batch: dict[str, Any] | None = None,
                  rewards: Sequence[Any] | None = None, columns_to_log: Sequence[str] = ("query", "response")) -> None:
        """Send the scalar statistics (and the mean reward) to the log history and the reporters."""
        logs = {k: float(v) for k, v in stats.items() if isinstance(v, (int, float)) or
                (isinstance(v, (np.ndarray, torch.Tensor)) and np.asarray(v).size == 1)}
        if rewards is not None:
            r = torch.stack([torch.as_tensor(x, dtype=torch.float32).reshape(()) for x in rewards])
            logs.update({"env/reward_mean": float(r.mean()), "env/reward_std": float(r.std()) if len(r) > 1 else 0.0,
                         "env/reward_dist": float(r.mean())})
        self.log(logs)

    def save_pretrained(self, save_directory: str) -> None:
        """The policy, its value head (TRL's layout) and the tokenizer."""
        self.model.save_pretrained(save_directory)
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(save_directory)

    def _save_pretrained(self, save_directory: str) -> None:
        self.save_pretrained(save_directory)


def _one_row(t: Any, name: str) -> torch.Tensor:
    """A token tensor [n], or [1, n] squeezed; anything else is ambiguous."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise ValueError(f"{name} has shape {tuple(t.shape)}: give one sequence per sample, shape [n] or [1, n] "
                         "(split a batch into a list of rows)")
    if t.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise TypeError(f"{name} must hold token ids (integers), got {t.dtype}")
    return t.long()


def _strip_trailing(row: torch.Tensor, pad: int, keep: int = 0, eos: int | None = None) -> torch.Tensor:
    """Drop padding after the end of a sequence (at least ``keep`` tokens stay). When padding is
    the end-of-sequence token, one of them stays: it is the generated end."""
    n = len(row)
    while n > keep and int(row[n - 1]) == pad:
        n -= 1
    if n < len(row) and pad == eos:
        n += 1
    return row[:n]


def _columns_collator(features: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [f[k] for f in features] for k in features[0]}
