"""Cross-entropy over a large vocabulary, in row blocks that stay in the CPU cache.

``F.cross_entropy`` on ``[rows, vocab]`` logits writes the whole log-softmax in the forward and
keeps it for the backward, then zero-fills a gradient of that size, scatters into it and reads
both again to form the logits' gradient: four passes over ``rows x vocab`` floats that do not
fit in the cache (SmolLM2's 512 x 49152 logits are 100 MB). Here the forward runs torch's
log-softmax kernel block by block into one block-sized buffer that stays in the cache, keeps each
row's loss and nothing else (the logits themselves are alive anyway), and the backward writes the
gradient ``softmax * scale - one_hot * scale`` block by block with torch's softmax kernel, so
each block is read and written while it is in the cache. Half-precision logits are computed in
float32 block by block, so no float32 copy of all the logits is made.

The losses are those of ``F.cross_entropy`` (the same log-softmax kernel, a row at a time); the
gradient is the same formula up to float32 rounding.
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
        picked = torch.empty(rows, dtype=torch.float32, device=logits.device)
        buffer = torch.empty(min(step, rows), logits.shape[1], dtype=torch.float32, device=logits.device)
        for start in range(0, rows, step):
            block = logits[start:start + step].float()
            log_probs = torch.log_softmax(block, 1, out=buffer[:block.shape[0]])
            torch.gather(log_probs, 1, targets[start:start + step].unsqueeze(1), out=picked[start:start + step].unsqueeze(1))
        losses = picked.neg_().masked_fill_(~valid, 0.0)
        ctx.save_for_backward(logits, targets, valid)
        return losses

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, valid = ctx.saved_tensors
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
            if in_place:
                g = torch.softmax(block, 1, out=grad[start:end])
            else:
                g = torch.softmax(block, 1)
            g.mul_(scale[start:end])
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
