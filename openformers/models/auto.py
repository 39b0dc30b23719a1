"""Auto classes: pick the config and model class from ``config.json``'s ``model_type``."""
from __future__ import annotations

import importlib
import os
from typing import Any

from openformers.core.config import PretrainedConfig, load_config_dict
from openformers.core.hub import names_gguf

# model_type -> (module, config class, {head: model class})
_HEADS = ("base", "sequence-classification", "token-classification", "question-answering", "masked-lm", "causal-lm")


def _family(module: str, prefix: str, causal: str | None, masked: str | None) -> tuple[str, str, dict[str, str]]:
    heads = {
        "base": f"{prefix}Model",
        "sequence-classification": f"{prefix}ForSequenceClassification",
        "token-classification": f"{prefix}ForTokenClassification",
        "question-answering": f"{prefix}ForQuestionAnswering",
    }
    if causal:
        heads["causal-lm"] = causal
    if masked:
        heads["masked-lm"] = masked
    return module, f"{prefix}Config", heads


MODEL_REGISTRY: dict[str, tuple[str, str, dict[str, str]]] = {
    "bert": _family("openformers.models.bert", "Bert", None, "BertForMaskedLM"),
    "roberta": _family("openformers.models.roberta", "Roberta", None, "RobertaForMaskedLM"),
    "xlm-roberta": _family("openformers.models.roberta", "XLMRoberta", None, "XLMRobertaForMaskedLM"),
    "distilbert": _family("openformers.models.distilbert", "DistilBert", None, "DistilBertForMaskedLM"),
    "gpt2": _family("openformers.models.gpt2", "GPT2", "GPT2LMHeadModel", None),
    "llama": _family("openformers.models.llama", "Llama", "LlamaForCausalLM", None),
    "mistral": _family("openformers.models.llama", "Mistral", "MistralForCausalLM", None),
    "qwen2": _family("openformers.models.llama", "Qwen2", "Qwen2ForCausalLM", None),
    "qwen3": _family("openformers.models.llama", "Qwen3", "Qwen3ForCausalLM", None),
    # no question-answering head (as in transformers)
    "gemma": ("openformers.models.llama", "GemmaConfig", {
        h: c for h, c in _family("openformers.models.llama", "Gemma", "GemmaForCausalLM", None)[2].items()
        if h != "question-answering"}),
    "starcoder2": ("openformers.models.llama", "Starcoder2Config", {
        h: c for h, c in _family("openformers.models.llama", "Starcoder2", "Starcoder2ForCausalLM", None)[2].items()
        if h != "question-answering"}),
}


def _unknown(model_type: Any) -> ValueError:
    return ValueError(
        f"model_type={model_type!r} is not supported by openformers. Supported model types: "
        f"{sorted(MODEL_REGISTRY)}. (Code shipped with a checkpoint is never run, so "
        f"trust_remote_code models cannot be loaded.)"
    )


def config_class_for(model_type: str | None) -> type[PretrainedConfig]:
    if model_type not in MODEL_REGISTRY:
        if model_type is None:
            raise ValueError("config.json has no 'model_type'; add it (e.g. \"bert\" or \"llama\") or load the model with its class")
        raise _unknown(model_type)
    module, config_name, _ = MODEL_REGISTRY[model_type]
    return getattr(importlib.import_module(module), config_name)


def model_class_for(model_type: str, head: str) -> type:
    if model_type not in MODEL_REGISTRY:
        raise _unknown(model_type)
    module, _, heads = MODEL_REGISTRY[model_type]
    if head not in heads:
        have = [h for h in _HEADS if h in heads]
        raise ValueError(f"model_type={model_type!r} has no {head} head; it has: {have}")
    return getattr(importlib.import_module(module), heads[head])


class AutoConfig:
    """``AutoConfig.from_pretrained(path)`` and ``AutoConfig.for_model(model_type, **kw)``."""

    def __init__(self) -> None:
        raise TypeError("use AutoConfig.from_pretrained(...) or AutoConfig.for_model(...)")

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> PretrainedConfig:
        return config_class_for(model_type)(**kwargs)

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """The config of a model folder, cached repo or GGUF file; keyword arguments override its fields.

        ``return_unused_kwargs=True`` returns ``(config, unused)``: the keywords that are not fields
        of the config are left out of it and returned. Download options are accepted and ignored."""
        from openformers.core.loading_options import NO_OP_MODEL_KWARGS

        for key in [k for k in kwargs if k in NO_OP_MODEL_KWARGS]:
            kwargs.pop(key)
        return_unused = bool(kwargs.pop("return_unused_kwargs", False))
        gguf_file = kwargs.pop("gguf_file", None)
        if names_gguf(name_or_path, gguf_file):
            from openformers.core.modeling import _gguf_path
            from openformers.models.gguf_loading import read_gguf_config

            hub = {k: kwargs.pop(k) for k in ("revision", "local_files_only", "cache_dir", "token") if k in kwargs}
            path = _gguf_path(os.fspath(name_or_path), gguf_file, hub)
            config_dict = read_gguf_config(path)
        else:
            config_dict, kwargs = load_config_dict(name_or_path, **kwargs)
        return config_class_for(config_dict.get("model_type"))._from_dict_and_kwargs(config_dict, kwargs, return_unused)


class _AutoModel:
    _head: str = "base"

    def __init__(self) -> None:
        raise TypeError(f"use {type(self).__name__}.from_pretrained(...) or .from_config(...)")

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any) -> Any:
        """A randomly initialised model for ``config``."""
        model_cls = model_class_for(config.model_type, cls._head)
        dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
        attn = kwargs.pop("attn_implementation", None)
        if attn is not None:
            config.attn_implementation = attn
        if kwargs:
            raise TypeError(f"{cls.__name__}.from_config got unknown arguments {sorted(kwargs)}")
        model = model_cls(config)
        if dtype is not None:
            from openformers.core.modeling import to_torch_dtype

            model.to(to_torch_dtype(dtype))
        return model

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        config = kwargs.get("config")
        if config is None:
            hub_keys = ("revision", "local_files_only", "cache_dir", "token", "subfolder", "trust_remote_code")
            hub = {k: kwargs[k] for k in hub_keys if k in kwargs}
            if names_gguf(name_or_path, kwargs.get("gguf_file")):
                model_type = AutoConfig.from_pretrained(name_or_path, gguf_file=kwargs.get("gguf_file"), **{k: v for k, v in hub.items() if k != "subfolder"}).model_type
            else:
                config_dict, _ = load_config_dict(name_or_path, **hub)
                model_type = config_dict.get("model_type")
                if model_type is None:
                    raise ValueError(f"{name_or_path}: config.json has no 'model_type'; supported: {sorted(MODEL_REGISTRY)}")
            kwargs.pop("trust_remote_code", None)
        else:
            model_type = config.model_type
        return model_class_for(model_type, cls._head).from_pretrained(name_or_path, *args, **kwargs)


class AutoModel(_AutoModel):
    _head = "base"


class AutoModelForSequenceClassification(_AutoModel):
    _head = "sequence-classification"


class AutoModelForTokenClassification(_AutoModel):
    _head = "token-classification"


class AutoModelForQuestionAnswering(_AutoModel):
    _head = "question-answering"


class AutoModelForMaskedLM(_AutoModel):
    _head = "masked-lm"


class AutoModelForCausalLM(_AutoModel):
    _head = "causal-lm"
