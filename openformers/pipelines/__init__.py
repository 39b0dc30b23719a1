"""``pipeline(task, model=...)``: ready-to-use inference for common NLP tasks.

>>> from openformers import pipeline
>>> embed = pipeline("feature-extraction", pooling="mean", normalize=True)   # the embedded MiniLM
>>> clf = pipeline("text-classification", model="path/to/checkpoint", batch_size=32)
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from .base import Pipeline

# task -> (module, class, model head, default model)
TASKS: dict[str, tuple[str, str, str, str | None]] = {
    "text-classification": ("text_classification", "TextClassificationPipeline", "sequence-classification", None),
    "token-classification": ("token_classification", "TokenClassificationPipeline", "token-classification", None),
    "question-answering": ("question_answering", "QuestionAnsweringPipeline", "question-answering", None),
    "fill-mask": ("fill_mask", "FillMaskPipeline", "masked-lm", None),
    "feature-extraction": ("feature_extraction", "FeatureExtractionPipeline", "base", "minilm"),
    "text-generation": ("text_generation", "TextGenerationPipeline", "causal-lm", "smollm2"),
    "zero-shot-classification": ("zero_shot_classification", "ZeroShotClassificationPipeline",
                                 "sequence-classification", None),
}
TASK_ALIASES: dict[str, str] = {"sentiment-analysis": "text-classification", "ner": "token-classification"}

_HEAD_SUFFIX = {  # architecture name ending -> task, to infer the task of a model given without one
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMaskedLM": "fill-mask",
    "ForCausalLM": "text-generation",
    "LMHeadModel": "text-generation",
    "ForFeatureExtraction": "feature-extraction",  # openformers.export's ORTModelForFeatureExtraction
    "Model": "feature-extraction",
}

_CLASSES = {name: f"openformers.pipelines.{module}" for module, name, _, _ in TASKS.values()}


def __getattr__(name: str) -> Any:
    if name == "KeyDataset":  # where transformers users import it from (pipelines.pt_utils)
        from openformers.data.key_dataset import KeyDataset

        return KeyDataset
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'openformers.pipelines' has no attribute {name!r}")


def _known_tasks() -> list[str]:
    return sorted(set(TASKS) | set(TASK_ALIASES))


def check_task(task: str) -> str:
    """The canonical name of ``task`` (aliases resolved); a clear error for an unknown task."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a string, got {type(task).__name__}")
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise KeyError(f"unknown task {task!r}; the available tasks are: {_known_tasks()}")
    return name


def _infer_task(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        from openformers.core.config import load_config_dict

        archs = load_config_dict(model)[0].get("architectures") or []
    else:
        archs = [type(model).__name__]
    for arch in archs:
        for suffix, task in _HEAD_SUFFIX.items():
            if arch.endswith(suffix):
                return task
    raise ValueError(f"could not infer the task of model {model!r} (architectures: {archs}); pass it: "
                     f"pipeline(task, model=...) with one of {_known_tasks()}")


def _check_head(model: Any, task: str, head: str) -> None:
    if head == "base":
        return  # feature extraction works on the hidden states of any model
    import torch

    from openformers.models.auto import MODEL_REGISTRY, model_class_for

    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model, torch.nn.Module) and isinstance(getattr(model, "_head", None), str):
        ok = model._head == head  # a model on another runtime (openformers.export's ORT models) names its head
    elif model_type in MODEL_REGISTRY:
        heads = MODEL_REGISTRY[model_type][2]
        expected = model_class_for(model_type, head) if head in heads else None
        ok = expected is not None and isinstance(model, expected)
    else:  # a model class from elsewhere: judge by its outputs' naming convention
        ok = any(type(model).__name__.endswith(s) for s, t in _HEAD_SUFFIX.items() if t == task and s != "Model")
    if not ok:
        raise ValueError(f"the {task!r} pipeline needs a model with a {head} head, but got "
                         f"{type(model).__name__}; load one with the matching Auto class "
                         f"(e.g. AutoModelFor{''.join(w.title() for w in head.split('-')).replace('Lm', 'LM')}"
                         f".from_pretrained(...)) or pass the checkpoint path as model=")


def _auto_class(head: str) -> Any:
    from openformers.models import auto

    return {
        "base": auto.AutoModel, "sequence-classification": auto.AutoModelForSequenceClassification,
        "token-classification": auto.AutoModelForTokenClassification,
        "question-answering": auto.AutoModelForQuestionAnswering, "masked-lm": auto.AutoModelForMaskedLM,
        "causal-lm": auto.AutoModelForCausalLM,
    }[head]


def pipeline(task: str | None = None, model: Any = None, tokenizer: Any = None, device: Any = None,
             dtype: Any = None, batch_size: int | None = None, num_workers: int | None = None,
             **kwargs: Any) -> Pipeline:
    """Build the pipeline for ``task`` with ``model`` (a name, a local path or a loaded model).

    Tasks: text-classification (sentiment-analysis), token-classification (ner),
    question-answering, fill-mask, feature-extraction, text-generation, zero-shot-classification.
    Without ``model``, feature-extraction uses the embedded MiniLM and text-generation the
    embedded SmolLM2; other tasks need a model. The tokenizer is loaded from the model's
    directory unless given. ``device`` (-1/"cpu", a CUDA index or name), ``dtype`` ("auto",
    "float16", torch dtypes), ``batch_size`` and ``num_workers`` (preprocessing threads) apply
    to every call; other keyword arguments are the task's options (and ``model_kwargs``,
    ``revision``, ``local_files_only``, ``progress_bar``).
    """
    if task is None and model is None:
        raise ValueError(f"give a task (one of {_known_tasks()}) or a model to pipeline()")
    task = check_task(task) if task is not None else _infer_task(model)
    module, class_name, head, default = TASKS[task]
    model_kwargs = dict(kwargs.pop("model_kwargs", None) or {})
    framework = kwargs.pop("framework", None)
    if framework not in (None, "pt"):
        raise ValueError(f"framework={framework!r}: openformers runs on PyTorch only (framework='pt')")
    kwargs.pop("use_fast", None)  # every openformers tokenizer is a fast (Rust) tokenizer
    for key in ("revision", "local_files_only", "cache_dir", "token", "trust_remote_code", "device_map"):
        if key in kwargs:
            model_kwargs[key] = kwargs.pop(key)
    if model is None:
        if tokenizer is not None:
            raise ValueError("a tokenizer was given without a model; pass model= as well")
        if default is None:
            raise ValueError(
                f"openformers ships no default model for {task!r} (and works offline): pass a local model, e.g. "
                f"pipeline({task!r}, model=\"path/to/checkpoint\") with a directory holding config.json, the "
                f"weights and the tokenizer files, or a loaded model and tokenizer= ")
        model = default
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        load_kwargs = dict(model_kwargs)
        if dtype is not None:
            load_kwargs["dtype"] = dtype
        model_obj = _auto_class(head).from_pretrained(name, **load_kwargs)
        if tokenizer is None:
            tokenizer = name
    else:
        model_obj = model
        _check_head(model_obj, task, head)
        if tokenizer is None:
            source = getattr(model_obj, "name_or_path", None) or getattr(
                getattr(model_obj, "config", None), "_name_or_path", None)
            if not source:
                raise ValueError(f"cannot tell where the tokenizer of this {type(model_obj).__name__} lives; "
                                 f"pass tokenizer= (a tokenizer object or its path)")
            tokenizer = source
    if isinstance(tokenizer, (str, os.PathLike)):
        from openformers.tokenization.auto import AutoTokenizer

        hub = {k: model_kwargs[k] for k in ("revision", "local_files_only", "cache_dir", "token") if k in model_kwargs}
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **hub)
    cls = getattr(importlib.import_module(f"openformers.pipelines.{module}"), class_name)
    return cls(model=model_obj, tokenizer=tokenizer, task=task, device=device,
               dtype=None if isinstance(model, (str, os.PathLike)) else dtype,
               batch_size=batch_size, num_workers=num_workers, **kwargs)


__all__ = ["pipeline", "Pipeline", "KeyDataset", "TASKS", "TASK_ALIASES", "check_task", *sorted(_CLASSES)]
