"""Vectorised beam search (and beam sampling) over a batch.

Per batch item we track ``num_beams`` running hypotheses and ``num_beams`` finished ones.
Each step scores every (beam, token) continuation by accumulated log-probability, keeps the
best ``beams_to_keep = max(2, 1 + #eos) * num_beams`` candidates (enough that ``num_beams`` of
them are still open even if others end), moves the candidates that hit a stopping criterion
into the finished set (score = log-prob / generated_length ** length_penalty) and continues the
best open ones.

Stopping follows ``early_stopping``: True stops a batch item once it has ``num_beams`` finished
hypotheses; False stops once the best running beam, scored at the current length, cannot beat
the worst finished one; "never" scores the running beam at its best reachable length when
``length_penalty > 0`` (the canonical, slower rule).
"""
from __future__ import annotations

from typing import Any

import torch

from openformers.generation.config import GenerationConfig
from openformers.generation.logits_process import LogitsProcessorList
from openformers.generation.stopping_criteria import StoppingCriteriaList

_LOST = -1.0e9  # score of a slot that must not be chosen


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather along the beam axis (dim 1) of a [batch, beams, ...] tensor with [batch, k] indices."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


def beam_search(decoder: Any, input_ids: torch.Tensor, config: GenerationConfig, processors: LogitsProcessorList,
                criteria: StoppingCriteriaList, eos: list[int] | None, pad: int | None,
                generator: torch.Generator | None) -> dict[str, Any]:
    num_beams = config.num_beams
    n_return = config.num_return_sequences
    early_stopping = config.early_stopping
    length_penalty = float(config.length_penalty)
    max_length = config.max_length
    do_sample = bool(config.do_sample)
    rows, prompt_len = input_ids.shape
    batch = rows // num_beams
    device = input_ids.device
    keep = max(2, 1 + (len(eos) if eos is not None else 0)) * num_beams
    top_slots = torch.zeros(keep, dtype=torch.bool, device=device)
    top_slots[:num_beams] = True

    want_scores = bool(config.return_dict_in_generate and config.output_scores)
    want_logits = bool(config.return_dict_in_generate and config.output_logits)
    all_scores: tuple | None = () if want_scores else None
    raw_logits: tuple | None = () if want_logits else None
    attentions: tuple | None = () if decoder.output_attentions else None
    hidden: tuple | None = () if decoder.output_hidden_states else None

    # unfilled positions of returned sequences hold pad (or the first EOS when pad is 0 or unset)
    fill = (pad if pad else eos[0]) if eos is not None else -1
    running = torch.full((batch, num_beams, max_length), fill, dtype=torch.long, device=device)
    running[:, :, :prompt_len] = input_ids.view(batch, num_beams, prompt_len)
    finished_seqs = running.clone()
    running_scores = torch.zeros(batch, num_beams, dtype=torch.float32, device=device)
    running_scores[:, 1:] = _LOST  # all beams start identical: only the first may expand
    finished_scores = torch.full((batch, num_beams), _LOST, dtype=torch.float32, device=device)
    is_finished = torch.zeros(batch, num_beams, dtype=torch.bool, device=device)
    may_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)
    running_origin = torch.full((batch, num_beams, max_length - prompt_len), -1, dtype=torch.long, device=device)
    finished_origin = running_origin.clone()
    batch_offset = torch.arange(batch, device=device)[:, None] * num_beams

    cur = prompt_len
    logits = decoder.prefill(input_ids)
    flat_ids = input_ids
    while True:
        log_probs = torch.log_softmax(logits, dim=-1)
        log_probs = processors(flat_ids, log_probs) if processors else log_probs
        if want_logits:
            raw_logits += (logits.clone(),)
        if want_scores:
            all_scores += (log_probs.clone(),)
        if attentions is not None:
            attentions += (getattr(decoder.last_output, "attentions", None),)
        if hidden is not None:
            hidden += (getattr(decoder.last_output, "hidden_states", None),)
        vocab = log_probs.shape[-1]
        total = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).view(batch, num_beams * vocab)
        if do_sample:
            cand = torch.multinomial(torch.softmax(total, dim=-1), num_samples=keep, generator=generator)
            cand_scores = total.gather(1, cand)
        else:
            cand_scores, cand = torch.topk(total, keep, dim=1)
        src_beam = cand // vocab
        cand_tokens = cand % vocab
        cand_seqs = _take(running, src_beam)
        cand_seqs[:, :, cur] = cand_tokens
        cand_origin = _take(running_origin, src_beam)
        cand_origin[:, :, cur - prompt_len] = src_beam + batch_offset
        hits = criteria(cand_seqs[:, :, : cur + 1].reshape(batch * keep, cur + 1), all_scores).view(batch, keep)

        # the best open candidates continue
        open_scores = cand_scores + hits.float() * _LOST
        pick = torch.topk(open_scores, num_beams, dim=1).indices
        running = _take(cand_seqs, pick)
        running_scores = _take(open_scores, pick)
        running_origin = _take(cand_origin, pick)

        # candidates among the top num_beams that just ended may enter the finished set
        just_done = hits & top_slots[None, :]
        done_scores = cand_scores / float(cur + 1 - prompt_len) ** length_penalty
        full = is_finished.all(dim=-1, keepdim=True) & (early_stopping is True)
        done_scores = done_scores + full.float() * _LOST
        done_scores = done_scores + (~may_improve).float() * _LOST
        done_scores = done_scores + (~just_done).float() * _LOST
        merged_scores = torch.cat([finished_scores, done_scores], dim=1)
        best = torch.topk(merged_scores, num_beams, dim=1).indices
        finished_seqs = _take(torch.cat([finished_seqs, cand_seqs], dim=1), best)
        finished_scores = _take(merged_scores, best)
        finished_origin = _take(torch.cat([finished_origin, cand_origin], dim=1), best)
        is_finished = _take(torch.cat([is_finished, just_done], dim=1), best)

        beam_idx = running_origin[:, :, cur - prompt_len].reshape(-1)
        cur += 1
        # can a running beam still beat the worst finished hypothesis?
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - prompt_len
        else:
            best_len = cur - prompt_len
        best_running = running_scores[:, :1] / float(best_len) ** length_penalty
        worst_done = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, _LOST)
        may_improve = may_improve & (best_running > worst_done).any(dim=-1, keepdim=True)
        go_on = bool(may_improve.any()) and not (bool(is_finished.all()) and early_stopping is True) and not bool(hits.all())
        if not go_on:
            break
        decoder.reorder(beam_idx)
        flat_ids = running[:, :, :cur].reshape(batch * num_beams, cur)
        logits = decoder.step(flat_ids[:, -1], cur)

    sequences = finished_seqs[:, :n_return].reshape(batch * n_return, max_length)
    seq_scores = finished_scores[:, :n_return].reshape(batch * n_return)
    origin = finished_origin[:, :n_return].reshape(batch * n_return, -1)
    generated = int((origin >= 0).sum(dim=1).max())
    return {
        "sequences": sequences[:, : prompt_len + generated],
        "sequences_scores": seq_scores if want_scores else None,
        "beam_indices": origin[:, :generated],
        "scores": all_scores,
        "logits": raw_logits,
        "attentions": attentions,
        "hidden_states": hidden,
    }
