"""Generation setup: resolving the ``GenerationConfig`` and building logits processors and stopping criteria."""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from openformers.core.inputs import check_token_ids, model_vocab_size
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

logger = logging.getLogger("openformers")


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


def check_input_lengths(model: torch.nn.Module, input_ids: torch.Tensor, max_length: int) -> None:
    """Refuse, before any forward pass, a prompt the model cannot read.

    Token ids must lie in ``[0, vocab_size)``. The prompt must fit the model's positions
    (``max_position_embeddings``; GPT-2's ``n_positions``): shorten it with the tokenizer
    (``tokenizer(text, truncation=True, max_length=...)``). A model with learned position
    embeddings (no rotary settings in its config) cannot go past its last position at all, so
    there the prompt plus the tokens to generate must fit too.
    """
    config = getattr(model, "config", None)
    if input_ids.shape[0] == 0:
        raise ValueError("input_ids holds no sequences (batch size 0); pass at least one prompt")
    check_token_ids(input_ids, model_vocab_size(model))
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return
    prompt_len = input_ids.shape[1]
    if prompt_len > positions:
        raise ValueError(
            f"the prompt has {prompt_len} tokens but the model reads at most {positions} positions "
            f"(max_position_embeddings); shorten it, e.g. tokenizer(text, truncation=True, max_length={positions})"
        )
    rotary = any(getattr(config, name, None) is not None for name in ("rope_parameters", "rope_theta", "rope_scaling"))
    if not rotary and max_length > positions:
        raise ValueError(
            f"the prompt ({prompt_len} tokens) plus the tokens to generate ({max_length - prompt_len}) exceed the "
            f"{positions} positions this model has learned embeddings for; set max_new_tokens to at most "
            f"{positions - prompt_len} or shorten the prompt"
        )


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
