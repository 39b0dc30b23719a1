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

import copy
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch

from openformers.core.outputs import ModelOutput
from openformers.generation.config import GenerationConfig
from openformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    LogitNormalization,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)
from openformers.generation.stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)
from openformers.modules.cache import Cache, DynamicCache, StaticCache

logger = logging.getLogger("openformers")


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

_UNSUPPORTED = {
    "assistant_model": "assisted decoding",
    "negative_prompt_ids": "classifier-free guidance",
    "negative_prompt_attention_mask": "classifier-free guidance",
    "custom_generate": "custom generate functions",
    "inputs_embeds": "generation from inputs_embeds (pass input_ids)",
}
_FORWARD_PARAMS: dict[type, frozenset[str]] = {}
_PER_TOKEN_INPUTS = ("token_type_ids",)


def _forward_params(model: torch.nn.Module) -> frozenset[str]:
    cls = type(model)
    params = _FORWARD_PARAMS.get(cls)
    if params is None:
        sig = inspect.signature(model.forward)
        names = set(sig.parameters)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            names.add("**")
        params = _FORWARD_PARAMS[cls] = frozenset(names)
    return params


# -- the model driver -----------------------------------------------------------------------------
class _Decoder:
    """Runs the model: prefill, then one token per row per step, keeping mask and positions current."""

    def __init__(self, model: torch.nn.Module, attention_mask: torch.Tensor, padded: bool, max_length: int,
                 cache: Cache | None, model_kwargs: dict[str, Any], output_attentions: bool,
                 output_hidden_states: bool) -> None:
        self.model = model
        self.params = _forward_params(model)
        self.cache = cache
        self.padded = padded
        self.kwargs = dict(model_kwargs)
        # per-token inputs ([b, len], e.g. token_type_ids) continue with each row's last value
        self.per_token: dict[str, torch.Tensor] = {}
        for name in _PER_TOKEN_INPUTS:
            value = self.kwargs.pop(name, None)
            if value is not None:
                buf = value[:, -1:].expand(value.shape[0], max_length).clone()
                buf[:, : value.shape[1]] = value
                self.per_token[name] = buf
        self.output_attentions = output_attentions
        self.output_hidden_states = output_hidden_states
        if output_attentions:
            self.kwargs["output_attentions"] = True
        if output_hidden_states:
            self.kwargs["output_hidden_states"] = True
        b, length = attention_mask.shape
        self.length = length
        self.mask_buf: torch.Tensor | None = None
        if padded:
            self.mask_buf = torch.ones(b, max_length, dtype=attention_mask.dtype, device=attention_mask.device)
            self.mask_buf[:, :length] = attention_mask
            positions = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
        else:
            positions = torch.arange(length, device=attention_mask.device).expand(b, length)
        self.prefill_positions = positions
        self.next_position = positions[:, -1:] + 1  # [b, 1]
        self.ids: torch.Tensor | None = None  # without a cache: the full sequence so far
        self.last_output: Any = None

    def _call(self, input_ids: torch.Tensor, position_ids: torch.Tensor, total_len: int, past_len: int) -> torch.Tensor:
        kw: dict[str, Any] = dict(self.kwargs)
        for name, buf in self.per_token.items():
            kw[name] = buf[:, past_len:total_len]
        p = self.params
        if self.mask_buf is not None:
            kw["attention_mask"] = self.mask_buf[:, :total_len]
        if "position_ids" in p or "**" in p:
            kw["position_ids"] = position_ids
        if self.cache is not None:
            kw["past_key_values"] = self.cache
            kw["use_cache"] = True
        elif "use_cache" in p or "**" in p:
            kw["use_cache"] = False
        if "logits_to_keep" in p:
            kw["logits_to_keep"] = 1
        if "cache_position" in p and "position_ids" not in p:
            kw["cache_position"] = torch.arange(past_len, total_len, device=input_ids.device)
        out = self.model(input_ids=input_ids, **kw)
        self.last_output = out
        logits = out.logits if hasattr(out, "logits") else out[0]
        if self.cache is not None:
            returned = getattr(out, "past_key_values", None)
            if isinstance(returned, Cache):
                self.cache = returned
        return logits[:, -1, :].float()

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        past = self.cache.get_seq_length() if self.cache is not None else 0
        if self.cache is None:
            self.ids = input_ids
        if past >= input_ids.shape[1]:
            raise ValueError(
                f"past_key_values already holds {past} positions but input_ids has only {input_ids.shape[1]}; "
                "pass input_ids covering the cached tokens plus at least one new token"
            )
        return self._call(input_ids[:, past:], self.prefill_positions[:, past:], input_ids.shape[1], past)

    def step(self, tokens: torch.Tensor, total_len: int) -> torch.Tensor:
        """Feed ``tokens`` [b] (the sequence now has ``total_len`` tokens)."""
        position = self.next_position
        self.next_position = position + 1
        if self.cache is None:
            self.ids = torch.cat([self.ids, tokens[:, None]], dim=-1)
            if self.mask_buf is not None:
                full_pos = (self.mask_buf[:, :total_len].long().cumsum(-1) - 1).clamp_(min=0)
            else:
                full_pos = torch.arange(total_len, device=tokens.device).expand(tokens.shape[0], total_len)
            return self._call(self.ids, full_pos, total_len, 0)
        return self._call(tokens[:, None], position, total_len, total_len - 1)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder_cache(beam_idx)
        else:
            self.ids = self.ids.index_select(0, beam_idx)
        if self.mask_buf is not None:
            self.mask_buf = self.mask_buf.index_select(0, beam_idx)
        for name, buf in self.per_token.items():
            self.per_token[name] = buf.index_select(0, beam_idx)
        self.next_position = self.next_position.index_select(0, beam_idx)


# -- configuration ----------------------------------------------------------------------------------
def _resolve_config(model: torch.nn.Module, generation_config: GenerationConfig | None,
                    kwargs: dict[str, Any]) -> tuple[GenerationConfig, dict[str, Any], bool]:
    model_config = getattr(model, "generation_config", None)
    if model_config is None:
        model_config = GenerationConfig.from_model_config(model.config)
    user_max = kwargs.get("max_length") is not None or (generation_config is not None and generation_config.max_length is not None)
    has_default_max_length = not user_max and model_config.max_length is None
    config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
    inherited = {k: v for k, v in model_config.to_dict().items() if v is not None and not k.startswith("_")
                 and k != "transformers_version"}
    config.update(defaults_only=True, allow_custom_entries=True, **inherited)
    config.update(defaults_only=True, **GenerationConfig.default_values())
    model_kwargs = config.update(**kwargs)
    return config, model_kwargs, has_default_max_length


def _id_list(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def _build_processors(config: GenerationConfig, input_len: int, eos: list[int] | None, padding_lengths: torch.Tensor | None,
                      user: LogitsProcessorList | None, prefix_fn: Any, device: torch.device) -> LogitsProcessorList:
    procs = LogitsProcessorList()
    if config.sequence_bias is not None:
        procs.append(SequenceBiasLogitsProcessor(config.sequence_bias))
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty), prompt_ignore_length=padding_lengths))
    if config.no_repeat_ngram_size:
        procs.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    if config.bad_words_ids is not None:
        procs.append(NoBadWordsLogitsProcessor(config.bad_words_ids, eos))
    if eos is not None and config.min_length is not None and config.min_length > 0:
        procs.append(MinLengthLogitsProcessor(config.min_length, eos, device=device))
    if eos is not None and config.min_new_tokens is not None and config.min_new_tokens > 0:
        procs.append(MinNewTokensLengthLogitsProcessor(input_len, config.min_new_tokens, eos, device=device))
    if prefix_fn is not None:
        procs.append(PrefixConstrainedLogitsProcessor(prefix_fn, config.num_beams))
    if config.forced_bos_token_id is not None:
        procs.append(ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        procs.append(ForcedEOSTokenLogitsProcessor(config.max_length, config.forced_eos_token_id, device=device))
    if config.remove_invalid_values:
        procs.append(InfNanRemoveLogitsProcessor())
    if config.exponential_decay_length_penalty is not None:
        if eos is None:
            raise ValueError("exponential_decay_length_penalty needs eos_token_id")
        procs.append(ExponentialDecayLengthPenalty(config.exponential_decay_length_penalty, eos, input_len))
    if config.suppress_tokens is not None:
        procs.append(SuppressTokensLogitsProcessor(config.suppress_tokens, device=device))
    if config.begin_suppress_tokens is not None:
        begin = input_len if (input_len > 1 or config.forced_bos_token_id is None) else input_len + 1
        procs.append(SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin, device=device))
    procs = _merge(procs, user)
    if config.do_sample:
        keep = (len(eos) + 1 if eos is not None else 2) if config.num_beams > 1 else 1
        if config.temperature is not None and config.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(float(config.temperature)))
        if config.top_k is not None and config.top_k != 0:
            procs.append(TopKLogitsWarper(config.top_k, min_tokens_to_keep=keep))
        if config.top_p is not None and config.top_p < 1.0:
            procs.append(TopPLogitsWarper(config.top_p, min_tokens_to_keep=keep))
        if config.min_p is not None:
            procs.append(MinPLogitsWarper(config.min_p, min_tokens_to_keep=keep))
        if config.typical_p is not None and config.typical_p < 1.0:
            procs.append(TypicalLogitsWarper(config.typical_p, min_tokens_to_keep=keep))
        if config.epsilon_cutoff is not None and 0.0 < config.epsilon_cutoff < 1.0:
            procs.append(EpsilonLogitsWarper(config.epsilon_cutoff, min_tokens_to_keep=keep))
        if config.eta_cutoff is not None and 0.0 < config.eta_cutoff < 1.0:
            procs.append(EtaLogitsWarper(config.eta_cutoff, min_tokens_to_keep=keep, device=device))
    if config.renormalize_logits:
        procs.append(LogitNormalization())
    return procs


def _merge(defaults: list, user: list | None) -> Any:
    """A user-given processor or criterion replaces the built-in one of the same type; the rest follow."""
    if not user:
        return defaults
    merged = type(defaults)()
    used = set()
    for item in defaults:
        replacement = next((u for u in user if type(u) is type(item)), None)
        if replacement is not None:
            logger.warning("generate: the %s passed in replaces the one built from the generation config",
                           type(item).__name__)
            merged.append(replacement)
            used.add(id(replacement))
        else:
            merged.append(item)
    merged.extend(u for u in user if id(u) not in used)
    return merged


def _build_criteria(model: torch.nn.Module, config: GenerationConfig, eos: list[int] | None, user: StoppingCriteriaList | None,
                    tokenizer: Any) -> StoppingCriteriaList:
    crit = StoppingCriteriaList()
    crit.append(MaxLengthCriteria(config.max_length, getattr(model.config, "max_position_embeddings", None)))
    if config.max_time is not None:
        crit.append(MaxTimeCriteria(config.max_time))
    if config.stop_strings is not None:
        if tokenizer is None:
            raise ValueError(
                "stop_strings are set (in the arguments or the model's generation config) but no tokenizer was given: "
                "pass tokenizer=<the model's tokenizer> to generate()"
            )
        crit.append(StopStringCriteria(tokenizer, config.stop_strings))
    if eos is not None:
        crit.append(EosTokenCriteria(eos))
    return _merge(crit, user)


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
