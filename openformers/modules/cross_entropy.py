"""Cross-entropy over a large vocabulary, in row blocks that stay in the CPU cache.

``F.cross_entropy`` on ``[rows, vocab]`` logits writes the whole log-softmax in the forward and
keeps it for the backward, then zero-fills a gradient of that size, scatters into it and reads
both again to form the logits' gradient: four passes over ``rows x vocab`` floats that do not
fit in the cache (SmolLM2's 512 x 49152 logits are 100 MB). Here the forward reads the logits
once for each row's log-sum-exp and keeps only that (one float a row; the logits themselves
are alive anyway), and the backward writes the gradient ``(softmax - one_hot) * scale`` block by
block, so each block is read and written while it is in the cache. Half-precision logits are
computed in float32 block by block, so no float32 copy of all the logits is made.

The values are those of ``F.cross_entropy`` up to float32 rounding (the same formula, evaluated
as ``exp(x - logsumexp(x))``).
"""
from __future__ import annotations

import torch

_BLOCK_BYTES = 1 << 21  # float32 bytes of logits per block on the CPU (fits in the L2 cache of a core pair)


def _block_rows(logits: torch.Tensor) -> int:
    if logits.device.type != "cpu":
        return max(1, logits.shape[0])  # one block: accelerators want few, large kernels
    return max(1, _BLOCK_BYTES // (4 * max(1, logits.shape[1])))


class _RowCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        rows = logits.shape[0]
        step = _block_rows(logits)
        lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
        for start in range(0, rows, step):
            torch.logsumexp(logits[start:start + step].float(), dim=-1, out=lse[start:start + step])
        picked = logits.gather(1, targets.unsqueeze(1)).squeeze(1).float()
        losses = (lse - picked).masked_fill_(~valid, 0.0)
        ctx.save_for_backward(logits, targets, valid, lse)
        return losses

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, valid, lse = ctx.saved_tensors
        scale = (grad_rows.float() * valid).unsqueeze(1)
        if torch.is_grad_enabled():  # create_graph: the same gradient from differentiable operators
            one_hot = torch.nn.functional.one_hot(targets, logits.shape[1]).float()
            return ((torch.softmax(logits.float(), dim=-1) - one_hot) * scale).to(logits.dtype), None, None
        grad = torch.empty_like(logits)
        in_place = logits.dtype == torch.float32
        step = _block_rows(logits)
        for start in range(0, logits.shape[0], step):
            end = start + step
            block = logits[start:end].float()
            out = grad[start:end] if in_place else None
            g = torch.sub(block, lse[start:end].unsqueeze(1), out=out)
            g.exp_().mul_(scale[start:end])
            # the one-hot part, in float32 before any cast (as a float32 loss's gradient has it)
            g.scatter_add_(1, targets[start:end].unsqueeze(1), -scale[start:end])
            if not in_place:
                grad[start:end].copy_(g)
        return grad, None, None


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100,
                  reduction: str = "mean") -> torch.Tensor:
    """``F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction=reduction)`` for
    ``[rows, classes]`` logits and ``[rows]`` integer labels, with ``reduction`` ``"mean"`` (over the
    labels that are not ``ignore_index``; NaN when there are none, as torch gives), ``"sum"`` or
    ``"none"``. Float32 result whatever the logits' dtype."""
    if logits.dim() != 2 or labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"cross_entropy wants [rows, classes] logits and [rows] labels, got logits "
                         f"{tuple(logits.shape)} and labels {tuple(labels.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    labels = labels.to(logits.device)
    valid = labels != ignore_index
    classes = logits.shape[1]
    outside = ((labels < 0) | (labels >= classes)).logical_and_(valid)
    if bool(outside.any()):
        bad = labels[outside][0].item()
        raise ValueError(f"label {bad} is outside the {classes} classes of the logits (valid labels are 0..{classes - 1}, "
                         f"or {ignore_index} to ignore a position)")
    targets = torch.where(valid, labels, 0).long()  # gather wants int64 indices; int32 labels are accepted too
    losses = _RowCrossEntropy.apply(logits, targets, valid)
    if reduction == "none":
        return losses
    total = losses.sum()
    return total if reduction == "sum" else total / valid.sum()
