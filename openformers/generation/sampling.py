"""The greedy / multinomial sampling decode loop (``num_beams == 1``)."""
from __future__ import annotations

from typing import Any

import torch

from openformers.generation.config import GenerationConfig
from openformers.generation.decoder import _Decoder
from openformers.generation.logits_process import LogitsProcessorList
from openformers.generation.stopping_criteria import StoppingCriteriaList


def _sample_loop(decoder: _Decoder, input_ids: torch.Tensor, config: GenerationConfig, processors: LogitsProcessorList,
                 criteria: StoppingCriteriaList, eos: list[int] | None, pad: int | None,
                 generator: torch.Generator | None, streamer: Any) -> dict[str, Any]:
    b, cur = input_ids.shape
    max_length = config.max_length
    want_scores = bool(config.return_dict_in_generate and config.output_scores)
    want_logits = bool(config.return_dict_in_generate and config.output_logits)
    scores: tuple | None = () if want_scores else None
    raw: tuple | None = () if want_logits else None
    attentions: tuple | None = () if decoder.output_attentions else None
    hidden: tuple | None = () if decoder.output_hidden_states else None
    fill = pad if pad is not None else 0
    seq = torch.full((b, max_length), fill, dtype=torch.long, device=input_ids.device)
    seq[:, :cur] = input_ids
    unfinished = torch.ones(b, dtype=torch.bool, device=input_ids.device)
    has_eos = any(hasattr(c, "eos_token_id") for c in criteria)
    if has_eos and pad is None:
        raise ValueError("an EOS stopping criterion needs pad_token_id (or eos_token_id) to fill finished rows")
    pad_t = torch.tensor(fill, dtype=torch.long, device=input_ids.device)
    do_sample = bool(config.do_sample)
    logits = decoder.prefill(input_ids)
    while True:
        ids_view = seq[:, :cur]
        next_scores = processors(ids_view, logits) if processors else logits
        if want_scores:
            scores += (next_scores,)
        if want_logits:
            raw += (logits,)
        if attentions is not None:
            attentions += (getattr(decoder.last_output, "attentions", None),)
        if hidden is not None:
            hidden += (getattr(decoder.last_output, "hidden_states", None),)
        if do_sample:
            probs = torch.softmax(next_scores, dim=-1)
            tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        else:
            tokens = torch.argmax(next_scores, dim=-1)
        if has_eos:
            tokens = torch.where(unfinished, tokens, pad_t)
        seq[:, cur] = tokens
        cur += 1
        if streamer is not None:
            streamer.put(tokens.cpu())
        unfinished &= ~criteria(seq[:, :cur], scores)
        if cur >= max_length or not bool(unfinished.any()):
            break
        logits = decoder.step(tokens, cur)
    return {"sequences": seq[:, :cur], "scores": scores, "logits": raw, "attentions": attentions, "hidden_states": hidden}
