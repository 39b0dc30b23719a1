"""Losses and pooling shared by the task heads of every architecture."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from openformers.core.config import PretrainedConfig
from openformers.modules.cross_entropy import cross_entropy


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
    """Loss by ``config.problem_type``; infers and records it when unset (as transformers does).

    regression: MSE; single_label_classification: cross-entropy; multi_label_classification:
    BCE with logits over float multi-hot labels.
    """
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.to(logits.device).view(-1), ignore_index=ignore_index)


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    num_items_in_batch: int | torch.Tensor | None = None,
    shift: bool = True,
) -> torch.Tensor:
    """Next-token cross-entropy. Labels are shifted inside: position t predicts labels[t + 1].

    The labels move, not the logits: the last position gets ``ignore_index``, so the [b, s, vocab]
    logits are read in place (slicing them off by one would copy them, and its backward would
    zero-fill and copy a gradient of that size again). The loss is computed in float32 in row
    blocks (:func:`~openformers.modules.cross_entropy.cross_entropy`): no log-softmax of all the
    logits is kept, and half-precision logits get no float32 copy.

    With ``num_items_in_batch`` the summed loss is divided by it, so a trainer can normalise
    over a whole accumulated batch instead of each micro-batch.
    """
    labels = labels.to(logits.device)
    if shift:
        labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    if num_items_in_batch is None:
        return cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index)
    total = cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="sum")
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    return causal_lm_loss(logits, labels, ignore_index=ignore_index, shift=False)


def question_answering_loss(
    start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor, end_positions: torch.Tensor
) -> torch.Tensor:
    """Mean of start and end cross-entropy; positions outside the sequence are ignored."""
    seq_len = start_logits.shape[1]
    start = start_positions.to(start_logits.device).view(-1).clamp(0, seq_len)
    end = end_positions.to(end_logits.device).view(-1).clamp(0, seq_len)
    return (F.cross_entropy(start_logits, start, ignore_index=seq_len) + F.cross_entropy(end_logits, end, ignore_index=seq_len)) / 2


def last_token_index(input_ids: torch.Tensor | None, pad_token_id: int | None, batch_size: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """Index of the last non-pad token of each row, for decoder sequence classification.

    Works for right and left padding: the rightmost token that is not padding. Without a pad
    token (or with inputs_embeds), the last position.
    """
    if input_ids is None or pad_token_id is None:
        return torch.full((batch_size,), seq_len - 1, dtype=torch.long, device=device)
    non_pad = (input_ids != pad_token_id).to(device=device, dtype=torch.long)
    positions = torch.arange(seq_len, device=device)
    return (non_pad * positions).argmax(-1)


def question_answering_logits(
    logits: torch.Tensor, start_positions: torch.Tensor | None, end_positions: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Split a QA head's ``[b, t, 2]`` output into contiguous start and end logits ``[b, t]``;
    returns ``(loss, start_logits, end_logits)``, the loss only when both positions are given."""
    start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
    loss = None
    if start_positions is not None and end_positions is not None:
        loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
    return loss, start_logits, end_logits


def pool_last_token(logits: torch.Tensor, input_ids: torch.Tensor | None, config: PretrainedConfig, owner: str) -> torch.Tensor:
    """Each row's logits at its last non-pad token (decoder sequence classification).

    A batch of several rows needs ``config.pad_token_id`` to find that token; ``owner`` names the
    model class in the error."""
    batch_size, seq_len = logits.shape[:2]
    pad = config.pad_token_id
    if pad is None and batch_size != 1:
        raise ValueError(
            f"{owner} needs config.pad_token_id to find the last token of each row in a batch of {batch_size}; "
            "set it (e.g. model.config.pad_token_id = tokenizer.pad_token_id)"
        )
    last = last_token_index(input_ids, pad, batch_size, seq_len, logits.device)
    return logits[torch.arange(batch_size, device=logits.device), last]


def classifier_dropout(config: PretrainedConfig, default: float = 0.1) -> float:
    """A decoder's token-classification dropout: ``classifier_dropout``, else ``hidden_dropout``, else ``default``."""
    for name in ("classifier_dropout", "hidden_dropout"):
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default
