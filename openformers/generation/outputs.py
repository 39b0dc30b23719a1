"""Output containers returned by ``generate`` and ``compute_transition_scores``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from openformers.core.outputs import ModelOutput
from openformers.modules.cache import Cache


# -- outputs ------------------------------------------------------------------------------------
@dataclass(repr=False)
class GenerateDecoderOnlyOutput(ModelOutput):
    """``sequences`` [batch * num_return_sequences, length]; per-step ``scores`` (processed) and
    ``logits`` (raw), each a tuple of [batch, vocab] tensors, when requested."""

    sequences: torch.LongTensor | None = None
    scores: tuple[torch.FloatTensor, ...] | None = None
    logits: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[Any, ...] | None = None
    hidden_states: tuple[Any, ...] | None = None
    past_key_values: Cache | None = None


@dataclass(repr=False)
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """Beam search result: ``sequences_scores`` (length-penalised log-probability of each returned
    sequence, with ``output_scores``) and ``beam_indices`` [n, generated] (the beam each token came from)."""

    sequences: torch.LongTensor | None = None
    sequences_scores: torch.FloatTensor | None = None
    scores: tuple[torch.FloatTensor, ...] | None = None
    logits: tuple[torch.FloatTensor, ...] | None = None
    beam_indices: torch.LongTensor | None = None
    attentions: tuple[Any, ...] | None = None
    hidden_states: tuple[Any, ...] | None = None
    past_key_values: Cache | None = None


GreedySearchDecoderOnlyOutput = SampleDecoderOnlyOutput = GenerateDecoderOnlyOutput
BeamSearchDecoderOnlyOutput = BeamSampleDecoderOnlyOutput = GenerateBeamDecoderOnlyOutput


def compute_transition_scores(sequences: torch.Tensor, scores: tuple[torch.Tensor, ...],
                              beam_indices: torch.Tensor | None = None, normalize_logits: bool = False) -> torch.Tensor:
    """Score of each generated token ([n, generated]) from ``generate(..., output_scores=True)`` outputs."""
    stacked = torch.stack(scores, dim=1)  # [n_rows, steps, vocab]
    if normalize_logits:
        stacked = stacked.float().log_softmax(dim=-1)
    steps = stacked.shape[1]
    generated = sequences[:, -steps:]
    if beam_indices is None:
        return stacked.gather(2, generated[:, :, None]).squeeze(2)
    beam_indices = beam_indices[:, :steps].clone()
    missing = beam_indices < 0
    beam_indices = beam_indices.masked_fill(missing, 0)
    step_idx = torch.arange(steps, device=stacked.device)[None, :].expand_as(beam_indices)
    picked = stacked[beam_indices, step_idx, generated[:, : beam_indices.shape[1]]]
    return picked.masked_fill(missing, 0.0)
