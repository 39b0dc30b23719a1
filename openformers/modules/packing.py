"""Token packing: run an encoder's per-token work on the real tokens of a padded batch only.

In a padded [batch, seq] batch every linear layer, LayerNorm, activation and dropout also works on
the padding positions, whose results nothing reads (attention masks them out as keys; losses skip
them). ``TokenPacking`` gathers the real tokens into [n_rows, ...] rows for that per-token work and
scatters them back to [batch, seq, ...] (zeros at padding) only where positions meet: in attention.

Dropout on packed rows draws the mask of the whole padded tensor and keeps the rows it needs, so the
random stream, and every real token's result, is the one the padded computation gives. A layer that
runs packed does so inside ``rows_of(packing)``, where modules it holds but does not know about (a
LoRA adapter's dropout) find the packing through ``dropout_rows``.

The row count is rounded up (to at most 16 sizes per doubling; at most 15 rows, or an eighth,
more) with padding positions, computed as the padded run computes them: matmul kernels that build code per
shape (oneDNN's bf16 GEMMs) would otherwise build, and cache, one for nearly every batch.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from openformers.modules.dropout import apply_mask, keep_mask, dropout as row_dropout
from openformers.modules.heads import causal_lm_loss

_CURRENT: ContextVar[TokenPacking | None] = ContextVar("openformers_token_packing", default=None)


def token_loss_only(training: bool, labels: torch.Tensor | None, attention_mask: torch.Tensor | None) -> bool:
    """Whether a per-token head reads nothing at padding: in training, with a loss whose labels are
    -100 at every padding position (in evaluation its logits there are returned, so they are computed)."""
    if not training or labels is None or attention_mask is None or labels.shape != attention_mask.shape:
        return False
    return bool((labels[attention_mask == 0] == -100).all())


def packing_for(pad_free: bool, attention_mask: torch.Tensor | None, output_hidden_states: bool,
                output_attentions: bool) -> TokenPacking | None:
    """The packing an encoder's forward uses: only when its caller reads nothing at padding
    positions (``pad_free``) and no per-position output (hidden states, attentions) is asked for."""
    if not pad_free or output_hidden_states or output_attentions:
        return None
    return TokenPacking.worth_it(attention_mask)


def shifted_labels_ignore_padding(labels: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    """Whether next-token labels score no padding position: position t is scored by labels[t + 1],
    which must be -100 wherever t is padding."""
    if attention_mask is None or attention_mask.dim() != 2 or labels.shape != attention_mask.shape:
        return False
    shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]
    return bool((shifted[attention_mask.to(labels.device) == 0] == -100).all())


def causal_lm_packing(model: nn.Module, labels: torch.Tensor | None, attention_mask: torch.Tensor | None,
                      past_key_values: Any, logits_to_keep: Any, output_hidden_states: bool | None,
                      output_attentions: bool | None) -> TokenPacking | None:
    """The packing of a causal LM's forward: training, labels that score no padding position, no
    cache, every position's logits, no per-position outputs asked for (``None`` flags: the config's)."""
    if not model.training or labels is None or past_key_values is not None or not isinstance(logits_to_keep, int) \
            or logits_to_keep != 0:
        return None
    cfg = model.config
    return packing_for(shifted_labels_ignore_padding(labels, attention_mask), attention_mask,
                       cfg.output_hidden_states if output_hidden_states is None else output_hidden_states,
                       cfg.output_attentions if output_attentions is None else output_attentions)


def rounded_rows(n: int, limit: int) -> int:
    """``n`` rounded up to a multiple of 16, or of n's power of two / 16 when larger; at most ``limit``."""
    step = max(16, 1 << max(n.bit_length() - 4, 0))
    return min(-(-n // step) * step, limit)


class TokenPacking:
    """The real-token rows of a padded batch, from its 1/0 ``attention_mask`` [batch, seq]."""

    def __init__(self, attention_mask: torch.Tensor) -> None:
        self.batch, self.seq = attention_mask.shape
        flat = attention_mask.reshape(-1) != 0
        real = flat.nonzero().squeeze(1)
        rows = rounded_rows(real.numel(), flat.numel())
        if rows > real.numel():
            real = torch.cat([real, (~flat).nonzero().squeeze(1)[: rows - real.numel()]])
        self.index = real

    @classmethod
    def worth_it(cls, attention_mask: torch.Tensor | None) -> TokenPacking | None:
        """A packing when it leaves rows out and every row starts with a real token (the first
        position is what poolers read); otherwise None: run padded."""
        if attention_mask is None or attention_mask.dim() != 2 or torch.compiler.is_exporting() \
                or not bool(attention_mask[:, 0].all()):
            return None  # an exported graph runs padded: its shapes cannot follow one batch's mask
        real = int(torch.count_nonzero(attention_mask))
        if rounded_rows(real, attention_mask.numel()) >= attention_mask.numel():
            return None
        return cls(attention_mask)

    @property
    def n_rows(self) -> int:
        return self.index.numel()

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, ...] -> [n_rows, ...]."""
        return x.reshape(self.batch * self.seq, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[n_rows, ...] -> [batch, seq, ...], zeros at the padding positions left out."""
        full = x.new_zeros((self.batch * self.seq, *x.shape[1:]))
        return full.index_copy(0, self.index, x).view(self.batch, self.seq, *x.shape[1:])

    def causal_lm_head(self, logits: torch.Tensor, labels: torch.Tensor,
                       num_items_in_batch: int | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits [batch, seq, vocab]) from the packed rows' logits: next-token labels packed
        alike, the logits of the positions left out zero."""
        rows_labels = self.pack(F.pad(labels.to(logits.device), (0, 1), value=-100)[:, 1:])
        loss = causal_lm_loss(logits, rows_labels, num_items_in_batch=num_items_in_batch, shift=False)
        return loss, self.unpack(logits)

    def dropout(self, x: torch.Tensor, p: float, training: bool, fast_mask: bool = False) -> torch.Tensor:
        """Dropout of packed ``x`` [n_rows, ...] with the mask dropout of the padded tensor draws
        (``F.dropout``'s, or with ``fast_mask`` that of ``modules/dropout.py``)."""
        if not training or p == 0:
            return x
        if p == 1:
            return x * 0
        shape = (self.batch * self.seq, *x.shape[1:])
        if fast_mask:
            if x.device.type == "cpu":  # the padded rows' hashes, for the packed rows only
                return apply_mask(x, keep_mask(x.shape, p, x.device, ids=self.index), p)
            return apply_mask(x, keep_mask(shape, p, x.device).index_select(0, self.index), p)
        noise = torch.empty(shape, dtype=x.dtype, device=x.device)
        noise.bernoulli_(1 - p).div_(1 - p)
        return x * noise.index_select(0, self.index)


@contextlib.contextmanager
def rows_of(packing: TokenPacking | None) -> Iterator[None]:
    """Within: the packed rows a layer works on are ``packing``'s (see ``dropout_rows``). Layers enter
    it in their own forward, so a gradient-checkpointing recomputation sees it too."""
    token = _CURRENT.set(packing)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def packed_row_ids(x: torch.Tensor) -> torch.Tensor | None:
    """For packed rows ``x`` [n_rows, ...] (inside ``rows_of``): each row's position in the padded batch; else None."""
    packing = _CURRENT.get()
    if packing is None or x.dim() != 2 or x.shape[0] != packing.n_rows:
        return None
    return packing.index


def dropout_rows(dropout: nn.Module, x: torch.Tensor, fast_mask: bool = False) -> torch.Tensor:
    """``dropout(x)``; for packed rows (inside ``rows_of``), with the mask of the padded tensor.

    ``fast_mask``: an ``nn.Dropout`` draws its mask with ``modules/dropout.py`` (several times
    faster on the CPU, another random stream than ``F.dropout``'s), packed or padded alike."""
    if not isinstance(dropout, nn.Dropout) or dropout._forward_hooks or dropout._forward_pre_hooks:
        return dropout(x)
    packing = _CURRENT.get()
    if packing is None or x.dim() != 2 or x.shape[0] != packing.n_rows:
        return row_dropout(x, dropout.p, dropout.training) if fast_mask else dropout(x)
    return packing.dropout(x, dropout.p, dropout.training, fast_mask)
