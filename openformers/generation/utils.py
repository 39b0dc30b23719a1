"""``generate(model, ...)``: greedy decoding, sampling and beam search on any causal LM.

The model contract: ``model(input_ids, attention_mask=..., position_ids=..., past_key_values=cache,
use_cache=True[, logits_to_keep=1]) -> output with .logits [b, q, vocab] and .past_key_values``.

Per-token work is kept flat: the output ids, the attention mask and the position ids live in
buffers sized for the whole generation and are passed as views; decode steps feed one token per
row and ask for the last logits only; an unpadded batch passes no mask at all (the model takes
its plain causal path).

Padding: rows may be padded on either side. Right-padded (or holed) rows are moved to left
padding internally, which attention with position ids from the mask makes exactly equivalent
to decoding each row alone; the returned sequences keep the prompt exactly as given and append
the new tokens after it, so ``out[:, input_ids.shape[1]:]`` is always the generated part.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from openformers.generation.config import GenerationConfig
from openformers.generation.decoder import _PER_TOKEN_INPUTS, _Decoder, _forward_params
from openformers.generation.logits_process import LogitsProcessorList
from openformers.generation.outputs import (
    BeamSampleDecoderOnlyOutput,
    BeamSearchDecoderOnlyOutput,
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    GreedySearchDecoderOnlyOutput,
    SampleDecoderOnlyOutput,
    compute_transition_scores,
)
from openformers.generation.sampling import _sample_loop
from openformers.generation.setup import _build_criteria, _build_processors, _id_list, _resolve_config, check_input_lengths
from openformers.generation.stopping_criteria import StoppingCriteriaList
from openformers.modules.cache import Cache, DynamicCache, StaticCache

logger = logging.getLogger("openformers")

__all__ = [
    "generate", "compute_transition_scores",
    "GenerateDecoderOnlyOutput", "GenerateBeamDecoderOnlyOutput", "GreedySearchDecoderOnlyOutput",
    "SampleDecoderOnlyOutput", "BeamSearchDecoderOnlyOutput", "BeamSampleDecoderOnlyOutput",
]

_UNSUPPORTED = {
    "assistant_model": "assisted decoding",
    "negative_prompt_ids": "classifier-free guidance",
    "negative_prompt_attention_mask": "classifier-free guidance",
    "custom_generate": "custom generate functions",
    "inputs_embeds": "generation from inputs_embeds (pass input_ids)",
}


# -- generate -----------------------------------------------------------------------------------------
def generate(
    model: torch.nn.Module,
    input_ids: torch.LongTensor | None = None,
    attention_mask: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    streamer: Any = None,
    generator: torch.Generator | None = None,
    tokenizer: Any = None,
    prefix_allowed_tokens_fn: Any = None,
    **kwargs: Any,
) -> torch.LongTensor | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
    """Generate continuations of ``input_ids`` [batch, len] with a causal LM.

    Keyword arguments that are ``GenerationConfig`` fields (``max_new_tokens=...``,
    ``do_sample=True``, ``num_beams=4``, ...) override ``generation_config``, which overrides the
    model's ``generation_config``. ``generator`` (a seeded ``torch.Generator``) makes sampling
    reproducible without touching the global RNG; ``tokenizer`` is needed for ``stop_strings``.
    Other keyword arguments are passed to the model's forward when it accepts them.

    Returns the sequences [batch * num_return_sequences, length] (prompt then new tokens; rows
    that finished early are filled with ``pad_token_id``), or a ``GenerateDecoderOnlyOutput`` /
    ``GenerateBeamDecoderOnlyOutput`` with ``return_dict_in_generate=True``.
    """
    if "inputs" in kwargs:
        if input_ids is not None:
            raise ValueError("pass the prompt either as `inputs` or as `input_ids`, not both")
        input_ids = kwargs.pop("inputs")
    for key in ("synced_gpus", "use_model_defaults", "trust_remote_code"):
        kwargs.pop(key, None)
    for key, what in _UNSUPPORTED.items():
        if kwargs.get(key) is not None:
            raise ValueError(f"generate(): `{key}` ({what}) is not supported by openformers")
        kwargs.pop(key, None)
    past_key_values = kwargs.pop("past_key_values", None)
    config, model_kwargs, has_default_max_length = _resolve_config(model, generation_config, kwargs)
    for field in ("top_h", "guidance_scale", "watermarking_config", "token_healing", "prompt_lookup_num_tokens"):
        value = getattr(config, field, None)
        if value not in (None, False) and not (field == "guidance_scale" and value == 1):
            raise ValueError(f"generate(): `{field}` is not supported by openformers; unset it")
    params = _forward_params(model)
    unknown = [k for k in model_kwargs if k not in params]
    if unknown:
        raise ValueError(
            f"generate() got arguments {unknown} that are neither GenerationConfig fields nor arguments of "
            f"{type(model).__name__}.forward"
        )
    if not getattr(model, "_is_causal_lm", True) and not hasattr(model, "get_output_embeddings"):
        raise ValueError(f"{type(model).__name__} is not a causal language model; generate() needs one")

    with torch.inference_mode():
        return _generate(model, input_ids, attention_mask, config, model_kwargs, has_default_max_length,
                         logits_processor, stopping_criteria, streamer, generator, tokenizer, prefix_allowed_tokens_fn,
                         past_key_values)


def _generate(model: torch.nn.Module, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
              config: GenerationConfig, model_kwargs: dict[str, Any], has_default_max_length: bool,
              logits_processor: LogitsProcessorList | None, stopping_criteria: StoppingCriteriaList | None,
              streamer: Any, generator: torch.Generator | None, tokenizer: Any, prefix_fn: Any,
              past_key_values: Cache | None) -> Any:
    device = model.device if hasattr(model, "device") else torch.device("cpu")
    eos = _id_list(config.eos_token_id)
    pad = config.pad_token_id
    if input_ids is None:
        if config.bos_token_id is None:
            raise ValueError("generate() needs input_ids, or a bos_token_id to start from")
        batch = attention_mask.shape[0] if attention_mask is not None else 1
        input_ids = torch.full((batch, 1), config.bos_token_id, dtype=torch.long, device=device)
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids, dtype=torch.long)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int, torch.int32, torch.int16):
        raise ValueError(f"input_ids must be a [batch, length] integer tensor, got {tuple(input_ids.shape)} {input_ids.dtype}")
    input_ids = input_ids.to(device=device, dtype=torch.long)
    batch, prompt_len = input_ids.shape
    if prompt_len == 0:
        raise ValueError("input_ids is empty; pass at least one token (e.g. the BOS token)")
    if pad is None and eos is not None:
        pad = eos[0]
    # -- attention mask: given, inferred from pad tokens, or all ones
    if attention_mask is None:
        pad_in_input = pad is not None and bool((input_ids == pad).any())
        can_infer = pad_in_input and (eos is None or pad not in eos)
        if can_infer:
            attention_mask = (input_ids != pad).long()
        else:
            attention_mask = torch.ones_like(input_ids)
            if batch > 1 and pad_in_input:
                logger.warning(
                    "generate(): the batch holds pad_token_id=%s but no attention_mask was given, and padding cannot "
                    "be told apart from EOS (the same id); every token is attended to. Pass the tokenizer's "
                    "attention_mask for correct results.",
                    pad,
                )
    else:
        attention_mask = torch.as_tensor(attention_mask).to(device)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}; "
                "pass the 2-D [batch, length] mask the tokenizer returned"
            )
        attention_mask = attention_mask.long()
    if bool((attention_mask.sum(-1) == 0).any()):
        raise ValueError("a row of attention_mask is all zeros: every prompt needs at least one real token")
    # -- move any right padding to the left (same results as each row alone)
    original_ids = input_ids
    is_left_packed = bool((attention_mask[:, 1:] >= attention_mask[:, :-1]).all())
    repacked = not is_left_packed
    if repacked:
        if past_key_values is not None:
            raise ValueError("past_key_values cannot be combined with right-padded input_ids; left-pad the batch")
        order = torch.sort(attention_mask, dim=1, stable=True).indices
        for name in _PER_TOKEN_INPUTS:
            if isinstance(model_kwargs.get(name), torch.Tensor):
                model_kwargs[name] = model_kwargs[name].gather(1, order)
        input_ids = input_ids.gather(1, order)
        attention_mask = attention_mask.gather(1, order)
        if pad is not None:
            input_ids = input_ids.masked_fill(attention_mask == 0, pad)
    padded = not bool(attention_mask.all())

    num_beams = config.num_beams
    n_return = config.num_return_sequences
    expand = max(num_beams, n_return)
    # -- lengths
    if config.max_new_tokens is not None:
        config.max_length = config.max_new_tokens + prompt_len
    elif has_default_max_length:
        config.max_length = config.max_length + prompt_len
        max_pos = getattr(model.config, "max_position_embeddings", None)
        if max_pos is not None:
            config.max_length = min(config.max_length, max_pos)
    if config.min_new_tokens is not None:
        config.min_length = config.min_new_tokens + prompt_len
    check_input_lengths(model, input_ids, config.max_length)
    if prompt_len >= config.max_length:
        raise ValueError(
            f"input_ids has {prompt_len} tokens but max_length is {config.max_length}: nothing is left to generate. "
            "Set max_new_tokens (preferred) or a larger max_length."
        )
    if streamer is not None and num_beams > 1:
        raise ValueError("streamer cannot be used with beam search (num_beams > 1); use num_beams=1")
    # -- processors and criteria
    padding_lengths = None
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0 and padded:
        padding_lengths = (attention_mask != 0).int().argmax(dim=1)
        padding_lengths = padding_lengths.repeat_interleave(expand, dim=0)
    processors = _build_processors(config, prompt_len, eos, padding_lengths, logits_processor, prefix_fn, device)
    criteria = _build_criteria(model, config, eos, stopping_criteria, tokenizer)
    # -- expand rows for beams / several samples
    if expand > 1:
        input_ids = input_ids.repeat_interleave(expand, dim=0)
        attention_mask = attention_mask.repeat_interleave(expand, dim=0)
        for name in _PER_TOKEN_INPUTS:
            if isinstance(model_kwargs.get(name), torch.Tensor):
                model_kwargs[name] = model_kwargs[name].repeat_interleave(expand, dim=0)
    # -- cache
    cache: Cache | None
    if past_key_values is not None:
        if not isinstance(past_key_values, Cache):
            raise ValueError("past_key_values must be a Cache (DynamicCache or StaticCache), not a tuple")
        cache = past_key_values
    elif not config.use_cache:
        cache = None
    elif config.cache_implementation == "static":
        cache = StaticCache(model.config, max_cache_len=max(config.max_length, config.max_cache_len or 0))
    else:
        cache = DynamicCache()
    decoder = _Decoder(model, attention_mask, padded, config.max_length, cache, model_kwargs,
                       bool(config.output_attentions and config.return_dict_in_generate),
                       bool(config.output_hidden_states and config.return_dict_in_generate))
    if streamer is not None:
        streamer.put(original_ids.cpu())
    if num_beams > 1:
        from openformers.generation.beam_search import beam_search

        result = beam_search(decoder, input_ids, config, processors, criteria, eos, pad, generator)
    else:
        result = _sample_loop(decoder, input_ids, config, processors, criteria, eos, pad, generator, streamer)
    if streamer is not None:
        streamer.end()
    sequences = result["sequences"]
    if repacked:
        # the prompt as the user laid it out, then the new tokens
        n_out = sequences.shape[0] // batch
        sequences = torch.cat([original_ids.repeat_interleave(n_out, dim=0), sequences[:, prompt_len:]], dim=1)
    if not config.return_dict_in_generate:
        return sequences
    common = dict(
        sequences=sequences,
        scores=result.get("scores"),
        logits=result.get("logits"),
        attentions=result.get("attentions"),
        hidden_states=result.get("hidden_states"),
        past_key_values=decoder.cache,
    )
    if num_beams > 1:
        return GenerateBeamDecoderOnlyOutput(
            sequences_scores=result.get("sequences_scores"), beam_indices=result.get("beam_indices"), **common
        )
    return GenerateDecoderOnlyOutput(**common)
