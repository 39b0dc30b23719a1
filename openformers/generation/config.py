"""``GenerationConfig``: the parameters of ``generate``, read from and written to ``generation_config.json``.

Every field defaults to None, meaning "not set": ``generate`` fills unset fields first from the
model's own generation config, then from :meth:`GenerationConfig.default_values` (max_length=20,
greedy, top_k=50, ...). This keeps a user's explicit choice apart from an inherited default,
and only set fields are written to disk.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

from openformers.core.durable import write_text

logger = logging.getLogger("openformers")

GENERATION_CONFIG_NAME = "generation_config.json"

# field -> value when neither the user nor the model sets it
_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "use_cache": True,
    "early_stopping": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": False,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict_in_generate": False,
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
    "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant",
    "assistant_confidence_threshold": 0.4,
    "assistant_lookbehind": 10,
    "target_lookbehind": 10,
}

# every standard field (all default to None = unset)
_FIELDS: tuple[str, ...] = (
    # length
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "max_time", "stop_strings",
    # strategy
    "do_sample", "num_beams", "num_beam_groups", "penalty_alpha", "dola_layers", "diversity_penalty",
    # cache
    "use_cache", "cache_implementation", "cache_config", "max_cache_len",
    # logits manipulation
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "encoder_repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "force_words_ids", "constraints", "renormalize_logits",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "token_healing", "guidance_scale",
    "watermarking_config",
    # outputs
    "num_return_sequences", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
    "return_dict_in_generate",
    # special tokens
    "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
    # assisted generation
    "is_assistant", "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
    "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit", "assistant_lookbehind",
    "target_lookbehind",
    # performance
    "compile_config", "disable_compile", "prefill_chunk_size", "low_memory",
)

CACHE_IMPLEMENTATIONS = ("dynamic", "static")
# names other libraries write that mean "the model's default cache" here
_CACHE_ALIASES = {"hybrid": None, "sliding_window": None, "offloaded": "dynamic", "offloaded_static": "static"}
_METADATA = ("transformers_version", "_from_model_config", "_commit_hash", "_original_object_hash")
_GENERATE_ONLY_ARGS = (
    "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus", "assistant_model",
    "streamer", "negative_prompt_ids", "negative_prompt_attention_mask", "generator", "tokenizer",
)


class GenerationConfig:
    """Parameters of text generation (Hugging Face ``GenerationConfig`` fields and semantics).

    Length: ``max_length``, ``max_new_tokens``, ``min_length``, ``min_new_tokens``,
    ``early_stopping`` (True, False or "never"; beam search), ``stop_strings``.
    Strategy: ``do_sample``, ``num_beams``. Logits: ``temperature``, ``top_k``, ``top_p``,
    ``min_p``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``, ``repetition_penalty``,
    ``no_repeat_ngram_size``, ``bad_words_ids``, ``length_penalty``, ... Outputs:
    ``num_return_sequences``, ``return_dict_in_generate``, ``output_scores``, ``output_logits``.
    Tokens: ``bos_token_id``, ``eos_token_id`` (int or list), ``pad_token_id``. Cache:
    ``use_cache``, ``cache_implementation`` ("dynamic" or "static").

    Unknown keyword arguments are kept as attributes (as the reference library does).
    """

    def __init__(self, **kwargs: Any) -> None:
        for name in _FIELDS:
            setattr(self, name, kwargs.pop(name, None))
        self._from_model_config = kwargs.pop("_from_model_config", None)
        self.transformers_version = kwargs.pop("transformers_version", None)
        kwargs.pop("_commit_hash", None)
        if isinstance(self.cache_implementation, str) and self.cache_implementation in _CACHE_ALIASES:
            self.cache_implementation = _CACHE_ALIASES[self.cache_implementation]
        for key, value in kwargs.items():
            if hasattr(type(self), key):
                raise ValueError(f"GenerationConfig: `{key}` is a method name, not a field; rename the entry")
            setattr(self, key, value)
        self.validate()

    # -- defaults ---------------------------------------------------------------------------
    @staticmethod
    def default_values() -> dict[str, Any]:
        """Values used for fields that neither the user nor the model's config sets."""
        return dict(_DEFAULTS)

    _get_default_generation_params = default_values

    # -- validation -------------------------------------------------------------------------
    def validate(self, strict: bool = False) -> None:
        """Raise ``ValueError`` (naming the field) for values generation cannot work with."""

        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"GenerationConfig: `{field}`={getattr(self, field)!r} is invalid: {why}")

        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if self.early_stopping not in (None, True, False, "never"):
            raise bad("early_stopping", "use True, False or 'never'")
        for field in ("max_length", "min_length", "min_new_tokens", "no_repeat_ngram_size", "top_k",
                      "encoder_no_repeat_ngram_size"):
            value = getattr(self, field)
            if value is not None and (not is_int(value) or value < 0):
                raise bad(field, "it must be a non-negative integer")
        if self.max_new_tokens is not None and (not is_int(self.max_new_tokens) or self.max_new_tokens <= 0):
            raise bad("max_new_tokens", "it must be a positive integer")
        for field in ("num_beams", "num_return_sequences"):
            value = getattr(self, field)
            if value is not None and (not is_int(value) or value < 1):
                raise bad(field, "it must be an integer >= 1")
        if self.do_sample and self.temperature is not None and not (float(self.temperature) > 0.0):
            raise bad("temperature", "sampling needs a strictly positive temperature; for greedy decoding set do_sample=False")
        if self.temperature is not None and float(self.temperature) < 0.0:
            raise bad("temperature", "it must be positive")
        if self.top_p is not None and not (0.0 < float(self.top_p) <= 1.0):
            raise bad("top_p", "it must be in (0, 1]")
        if self.min_p is not None and not (0.0 <= float(self.min_p) <= 1.0):
            raise bad("min_p", "it must be in [0, 1]")
        if self.typical_p is not None and not (0.0 < float(self.typical_p) <= 1.0):
            raise bad("typical_p", "it must be in (0, 1]")
        for field in ("epsilon_cutoff", "eta_cutoff"):
            value = getattr(self, field)
            if value is not None and not (0.0 <= float(value) < 1.0):
                raise bad(field, "it must be in [0, 1)")
        for field in ("repetition_penalty", "encoder_repetition_penalty"):
            value = getattr(self, field)
            if value is not None and not (float(value) > 0.0):
                raise bad(field, "it must be strictly positive (1.0 means no penalty)")
        if self.bad_words_ids is not None:
            ok = isinstance(self.bad_words_ids, list) and len(self.bad_words_ids) > 0 and all(
                isinstance(seq, list) and len(seq) > 0 and all(is_int(t) and t >= 0 for t in seq)
                for seq in self.bad_words_ids
            )
            if not ok:
                raise bad("bad_words_ids", "it must be a non-empty list of non-empty lists of token ids")
        if self.eos_token_id is not None:
            ids = self.eos_token_id if isinstance(self.eos_token_id, (list, tuple)) else [self.eos_token_id]
            if not all(is_int(t) for t in ids):
                raise bad("eos_token_id", "it must be a token id or a list of token ids")
        if self.stop_strings is not None:
            strings = [self.stop_strings] if isinstance(self.stop_strings, str) else self.stop_strings
            if not isinstance(strings, (list, tuple)) or not strings or not all(isinstance(s, str) and s for s in strings):
                raise bad("stop_strings", "it must be a non-empty string or a list of non-empty strings")
        if self.cache_implementation is not None and self.cache_implementation not in CACHE_IMPLEMENTATIONS:
            raise bad("cache_implementation", f"choose one of {CACHE_IMPLEMENTATIONS}")
        if self.max_new_tokens is None and self.max_length is not None and self.min_length is not None and (
            self.min_length > self.max_length
        ):
            logger.warning("GenerationConfig: min_length=%s exceeds max_length=%s", self.min_length, self.max_length)
        beams = self.num_beams or 1
        n_return = self.num_return_sequences or 1
        if n_return > 1:
            if beams == 1 and not self.do_sample:
                raise bad(
                    "num_return_sequences",
                    "greedy decoding returns one sequence per prompt; set do_sample=True or num_beams > 1",
                )
            if beams > 1 and n_return > beams:
                raise bad("num_return_sequences", f"beam search can return at most num_beams={beams} sequences")
        if self.num_beam_groups not in (None, 1) or self.constraints is not None or self.force_words_ids is not None:
            raise ValueError(
                "GenerationConfig: group beam search (num_beam_groups), constraints and force_words_ids are not "
                "supported; unset them"
            )
        if self.penalty_alpha is not None and self.penalty_alpha > 0 and self.top_k is not None and self.top_k > 1 and not self.do_sample:
            raise ValueError("GenerationConfig: contrastive search (penalty_alpha) is not supported; unset penalty_alpha")
        for arg in _GENERATE_ONLY_ARGS:
            if arg in self.__dict__:
                raise ValueError(f"GenerationConfig: `{arg}` is an argument of generate(), not a config field; pass it to generate()")
        if strict and not self.do_sample:
            for field in ("temperature", "top_p", "typical_p", "min_p"):
                value = getattr(self, field)
                if value is not None and value != _DEFAULTS.get(field):
                    raise bad(field, "it only applies when do_sample=True")

    # -- updating ---------------------------------------------------------------------------
    def update(self, defaults_only: bool = False, allow_custom_entries: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Set the attributes named in ``kwargs``; return the ones that are not fields (unchanged).

        ``defaults_only=True`` only fills fields that are still None.
        """
        used = []
        for key, value in kwargs.items():
            if key in self.__dict__ and not key.startswith("_"):
                if not defaults_only or getattr(self, key) is None:
                    setattr(self, key, value)
                used.append(key)
            elif allow_custom_entries and not key.startswith("_") and not hasattr(type(self), key):
                setattr(self, key, value)
                used.append(key)
        if isinstance(self.cache_implementation, str) and self.cache_implementation in _CACHE_ALIASES:
            self.cache_implementation = _CACHE_ALIASES[self.cache_implementation]
        self.validate()
        return {k: v for k, v in kwargs.items() if k not in used}

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every attribute, set or not."""
        out = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in ("_original_object_hash",)}
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """Only the attributes that are set (the form written to ``generation_config.json``)."""
        out = {}
        for key, value in self.to_dict().items():
            if value is None or key == "transformers_version":
                continue
            if key == "_from_model_config" and not value:
                continue
            out[key] = value
        return out

    def to_json_string(self, use_diff: bool = True, ignore_metadata: bool = False) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        if ignore_metadata:
            for key in _METADATA:
                data.pop(key, None)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        Path(json_file_path).write_text(self.to_json_string(use_diff=use_diff), encoding="utf-8")

    def save_pretrained(self, save_directory: str | os.PathLike, config_file_name: str | None = None, **kwargs: Any) -> None:
        """Write ``generation_config.json`` (only the set fields) into ``save_directory``."""
        path = Path(save_directory)
        if path.is_file():
            raise ValueError(f"save_directory {path} is a file; pass a directory")
        self.validate()
        path.mkdir(parents=True, exist_ok=True)
        target = path / (config_file_name or GENERATION_CONFIG_NAME)
        write_text(target, self.to_json_string())

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "GenerationConfig" | tuple["GenerationConfig", dict[str, Any]]:
        return_unused = kwargs.pop("return_unused_kwargs", False)
        config = cls(**copy.deepcopy(config_dict))
        unused = config.update(**kwargs)
        return (config, unused) if return_unused else config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> "GenerationConfig":
        try:
            data = json.loads(Path(json_file).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{json_file} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name: str | os.PathLike,
        config_file_name: str | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        subfolder: str = "",
        return_unused_kwargs: bool = False,
        **kwargs: Any,
    ) -> "GenerationConfig" | tuple["GenerationConfig", dict[str, Any]]:
        """Read ``generation_config.json`` from a directory (or a cached repo id); ``kwargs`` override fields."""
        for k in ("force_download", "proxies", "resume_download", "_from_auto", "_from_pipeline"):
            kwargs.pop(k, None)
        name = config_file_name or GENERATION_CONFIG_NAME
        path = Path(os.fspath(pretrained_model_name))
        if path.is_file():
            file = path
        else:
            from openformers.core.hub import contained_path, resolve_model_dir

            directory = contained_path(resolve_model_dir(
                pretrained_model_name, revision=revision, local_files_only=local_files_only,
                cache_dir=cache_dir, token=token,
            ), subfolder, "subfolder")
            file = contained_path(directory, name, "config_file_name")
            if not file.is_file():
                raise OSError(f"{directory} has no {name}; save one with GenerationConfig.save_pretrained")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise OSError(f"{file} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def from_model_config(cls, model_config: Any) -> "GenerationConfig":
        """Derive a generation config from a model config (its special tokens and any generation fields it carries)."""
        data = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
        values = {k: v for k, v in data.items() if k in _FIELDS and v is not None}
        config = cls(**values)
        config._from_model_config = True
        return config

    @classmethod
    def from_model(cls, model_config: Any, model_dir: str | os.PathLike | None = None) -> "GenerationConfig":
        """The model's generation config: ``model_dir/generation_config.json`` if present, else from ``model_config``."""
        if model_dir is not None:
            file = Path(model_dir) / GENERATION_CONFIG_NAME
            if file.is_file():
                try:
                    return cls.from_json_file(file)
                except ValueError as exc:
                    logger.warning("ignoring %s: %s", file, exc)
        return cls.from_model_config(model_config)

    # -- misc ---------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenerationConfig):
            return NotImplemented
        return self.to_json_string(use_diff=False, ignore_metadata=True) == other.to_json_string(
            use_diff=False, ignore_metadata=True
        )

    def __hash__(self) -> int:
        return hash(self.to_json_string(ignore_metadata=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string(ignore_metadata=True)}"

    def get_generation_mode(self) -> str:
        """'greedy_search', 'sample', 'beam_search' or 'beam_sample'."""
        beams = self.num_beams or 1
        if beams > 1:
            return "beam_sample" if self.do_sample else "beam_search"
        return "sample" if self.do_sample else "greedy_search"
