"""The losses of the post-training methods as plain functions of tensors.

Each trainer calls these; the tests compare them with TRL's on the same inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., index]`` without keeping the full [b, s, vocab] log-probabilities."""
    logits = logits.float()
    picked = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_log_probs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each next token: [b, s, v] logits and [b, s] ids -> [b, s - 1]."""
    return selective_log_softmax(logits[:, :-1], input_ids[:, 1:])


# -- reward model ---------------------------------------------------------------------------------
def reward_pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                         center_rewards_coefficient: float | None = None) -> torch.Tensor:
    """Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected [- margin])``, mean over pairs,
    plus ``coef * mean((r_chosen + r_rejected)^2)`` when centering rewards."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
    return loss


# -- DPO ------------------------------------------------------------------------------------------
def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, *, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0, chosen_lengths: torch.Tensor | None = None,
             rejected_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair DPO loss [b] from sequence log-probabilities (summed over completion tokens).

    ``ipo`` averages the log-ratios over each completion's tokens (pass the lengths), as TRL does.
    """
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":  # TRL's sigmoid loss takes no label smoothing: 'robust' is the smoothed one
        return -F.logsigmoid(beta * delta)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("dpo_loss(loss_type='ipo') needs chosen_lengths and rejected_lengths")
        avg = chosen_ratio / chosen_lengths.clamp(min=1.0) - rejected_ratio / rejected_lengths.clamp(min=1.0)
        return (avg - 1 / (2 * beta)) ** 2
    if loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose sigmoid, hinge, ipo or robust")


# -- GRPO -----------------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> torch.Tensor:
    """Rewards [n] of consecutive groups of ``num_generations`` completions -> advantages [n]."""
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(dim=1).repeat_interleave(num_generations)
    advantages = rewards - mean
    if scale_rewards == "group":
        std = grouped.std(dim=1).repeat_interleave(num_generations)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        return advantages
    return advantages / (std + 1e-4)


def grpo_loss(per_token_logps: torch.Tensor, old_per_token_logps: torch.Tensor, advantages: torch.Tensor,
              completion_mask: torch.Tensor, *, ref_per_token_logps: torch.Tensor | None = None, beta: float = 0.0,
              epsilon_low: float = 0.2, epsilon_high: float = 0.2, delta: float | None = None,
              loss_type: str = "dapo", max_completion_length: int | None = None,
              num_items: float | torch.Tensor | None = None,
              use_bias_correction_kl: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Clipped surrogate loss on [b, t] per-token log-probabilities; returns (loss, per-token KL or None).

    Normalisation by ``loss_type``: ``grpo`` mean over each sequence then over sequences; ``bnpo``
    over the batch's tokens; ``dr_grpo`` over ``b * max_completion_length``; ``dapo`` over
    ``num_items`` (the tokens of the whole generation batch; this batch's tokens when None).
    ``use_bias_correction_kl`` weighs the KL by the (unclipped) ratio to the old policy, which makes its
    gradient the unbiased reverse-KL gradient when rollouts are reused (a no-op while the ratio is 1).
    """
    mask = completion_mask.to(per_token_logps.dtype)
    ratio = torch.exp(per_token_logps - old_per_token_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    unclipped = ratio
    if delta is not None:
        ratio = torch.clamp(ratio, max=delta)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta != 0.0:
        if ref_per_token_logps is None:
            raise ValueError("grpo_loss: beta != 0 needs ref_per_token_logps")
        diff = ref_per_token_logps - per_token_logps
        kl = torch.exp(diff) - diff - 1
        if use_bias_correction_kl:
            kl = kl * unclipped
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean(), kl
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0), kl
    if loss_type == "dr_grpo":
        length = max_completion_length if max_completion_length is not None else per_token.size(1)
        return (per_token * mask).sum() / (per_token.size(0) * length), kl
    if loss_type == "dapo":
        n = mask.sum() if num_items is None else torch.as_tensor(num_items, dtype=mask.dtype)
        return (per_token * mask).sum() / n.clamp(min=1.0), kl
    raise ValueError(f"unknown GRPO loss_type {loss_type!r}; choose grpo, bnpo, dr_grpo or dapo")


# -- PPO ------------------------------------------------------------------------------------------
def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise to zero mean and unit variance over the masked entries (the mean kept if not ``shift_mean``)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def gae_advantages(values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
                   whiten: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens [b, t]; returns (advantages, returns).

    Positions outside ``mask`` get zero value and reward, so a response ending early bootstraps from 0.
    """
    values = values * mask
    rewards = rewards * mask
    last = torch.zeros_like(values[:, 0])
    out = []
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        out.append(last)
    advantages = torch.stack(out[::-1], dim=1)
    returns = advantages + values
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return advantages.detach(), returns.detach()


def ppo_losses(logprobs: torch.Tensor, old_logprobs: torch.Tensor, values: torch.Tensor, old_values: torch.Tensor,
               advantages: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *, cliprange: float,
               cliprange_value: float, vf_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped policy loss and clipped value loss; returns (policy loss, value loss, total, statistics)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses1 = (values - returns) ** 2
    vf_losses2 = (clipped_values - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    vf_clipfrac = masked_mean(torch.gt(vf_losses2, vf_losses1).float(), mask)
    ratio = torch.exp(logprobs - old_logprobs)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses).float(), mask)
    total = pg_loss + vf_coef * vf_loss
    approxkl = 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)
    policykl = masked_mean(old_logprobs - logprobs, mask)
    stats = {"policy/approxkl": approxkl.detach(), "policy/policykl": policykl.detach(),
             "policy/clipfrac": pg_clipfrac.detach(), "val/clipfrac": vf_clipfrac.detach(),
             "policy/ratio": masked_mean(ratio, mask).detach()}
    return pg_loss, vf_loss, total, stats


def kl_penalised_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float, kl_penalty: str = "kl") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: ``-kl_coef * KL`` at every response token, plus the score at the last one.

    Returns (rewards [b, t], per-token KL [b, t])."""
    kl = per_token_kl(logprobs, ref_logprobs, kl_penalty) * mask
    rewards = -kl_coef * kl
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & mask.bool()
    last_index = last.float().argmax(1)
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0]), last_index] += scores
    return rewards, kl


def per_token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kl_penalty: str = "kl") -> torch.Tensor:
    """The KL estimators of classic PPO: ``kl`` (log-ratio), ``abs``, ``mse`` (half squared log-ratio)."""
    diff = logprobs - ref_logprobs
    if kl_penalty == "kl":
        return diff
    if kl_penalty == "abs":
        return diff.abs()
    if kl_penalty == "mse":
        return 0.5 * diff.square()
    if kl_penalty == "full":
        raise ValueError("kl_penalty='full' needs whole distributions; use 'kl', 'abs' or 'mse'")
    raise ValueError(f"unknown kl_penalty {kl_penalty!r}; choose 'kl', 'abs' or 'mse'")
