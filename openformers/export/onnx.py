"""ONNX export: ``to_onnx(model, output_dir, task=...)`` writes ``model.onnx`` with the config and
tokenizer beside it, in the layout optimum's exports use (so onnxruntime tools read it).

The graph is the plain module math: the model is traced in eval mode with autograd on, so the
inference runtime steps aside and no fast path (fused projections, decode plans, packed
weights) is taken, and the masks are always built (``torch.compiler.is_exporting()``), so the
graph does not depend on the example batch. The exporter is ``torch.onnx.export(dynamo=True)``
(``torch.export`` then onnxscript), with dynamic batch and sequence axes.

Decoders export for ``text-generation-with-past`` as optimum does: inputs ``input_ids``,
``attention_mask`` (over past and new positions), ``position_ids`` and
``past_key_values.{i}.key`` / ``.value`` ([batch, kv_heads, past, head_dim], past may be 0);
outputs ``logits`` and ``present.{i}.key`` / ``.value`` (past and new positions).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger("openformers")

DEFAULT_OPSET = 18  # runs on every onnxruntime since 1.14; the dynamo exporter's own target

# task -> (model head of models/auto.py, output names). Aliases follow optimum's and the pipelines' names.
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "feature-extraction": ("base", ("last_hidden_state",)),
    "text-classification": ("sequence-classification", ("logits",)),
    "token-classification": ("token-classification", ("logits",)),
    "question-answering": ("question-answering", ("start_logits", "end_logits")),
    "fill-mask": ("masked-lm", ("logits",)),
    "text-generation": ("causal-lm", ("logits",)),
    "text-generation-with-past": ("causal-lm", ("logits",)),
}
TASK_ALIASES = {
    "sequence-classification": "text-classification", "sentiment-analysis": "text-classification",
    "ner": "token-classification", "masked-lm": "fill-mask", "causal-lm": "text-generation",
    "causal-lm-with-past": "text-generation-with-past", "default": "feature-extraction",
}


def normalize_task(task: str) -> str:
    """The canonical export task for ``task`` (aliases resolved); a clear error otherwise."""
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise ValueError(f"unknown export task {task!r}; choose one of {sorted(set(TASKS) | set(TASK_ALIASES))}")
    return name


def infer_task(model: nn.Module) -> str:
    """The export task of a loaded model from its class (causal LMs: ``text-generation-with-past``)."""
    name = type(model).__name__
    for suffix, task in (("ForSequenceClassification", "text-classification"),
                         ("ForTokenClassification", "token-classification"),
                         ("ForQuestionAnswering", "question-answering"), ("ForMaskedLM", "fill-mask"),
                         ("ForCausalLM", "text-generation-with-past"), ("LMHeadModel", "text-generation-with-past"),
                         ("Model", "feature-extraction")):
        if name.endswith(suffix):
            return task
    raise ValueError(f"cannot tell the export task of a {name}; pass task= (one of {sorted(TASKS)})")


def auto_class(head: str) -> Any:
    """The Auto class that loads a model with ``head`` (a head name of models/auto.py)."""
    from openformers.models import auto

    return {
        "base": auto.AutoModel, "sequence-classification": auto.AutoModelForSequenceClassification,
        "token-classification": auto.AutoModelForTokenClassification,
        "question-answering": auto.AutoModelForQuestionAnswering, "masked-lm": auto.AutoModelForMaskedLM,
        "causal-lm": auto.AutoModelForCausalLM,
    }[head]


def _check_head(model: nn.Module, task: str) -> None:
    from openformers.models.auto import MODEL_REGISTRY, model_class_for

    head = TASKS[task][0]
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_REGISTRY:
        raise ValueError(f"to_onnx: model_type={model_type!r} is not an openformers model type "
                         f"({sorted(MODEL_REGISTRY)})")
    heads = MODEL_REGISTRY[model_type][2]
    if head == "base":
        return  # the hidden states of any head's base model
    if head not in heads or not isinstance(model, model_class_for(model_type, head)):
        raise ValueError(f"task {task!r} needs a {model_type} model with a {head} head, got {type(model).__name__}; "
                         f"load it with the matching AutoModelFor... class or pick the task of this head")


class _ConcatCache:
    """A key/value cache for tracing: past tensors in, ``torch.cat`` on update (no in-place buffers)."""

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.keys = [k for k, _ in past]
        self.values = [v for _, v in past]

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=-2)
        self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].shape[-2]


def _traced_cache(past: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from openformers.modules.cache import Cache

    # a subclass made here so that models' isinstance(cache, Cache) checks accept it
    cls = type("ExportCache", (_ConcatCache, Cache), {})
    return cls(past)


class _EncoderWrapper(nn.Module):
    def __init__(self, model: nn.Module, input_names: list[str], output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_names = output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.input_names, inputs)), return_dict=True)
        return tuple(getattr(out, name) for name in self.output_names)


class _DecoderWrapper(nn.Module):
    def __init__(self, model: nn.Module, with_past: bool, num_layers: int) -> None:
        super().__init__()
        self.model = model
        self.with_past = with_past
        self.num_layers = num_layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.with_past:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False, return_dict=True)
            return (out.logits,)
        cache = _traced_cache([(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, return_dict=True)
        present: list[torch.Tensor] = []
        for k, v in zip(cache.keys, cache.values):
            present += [k, v]
        return (out.logits, *present)


def kv_shape(config: Any) -> tuple[int, int, int]:
    """(number of layers, key/value heads, head size) of a decoder's cache."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer")
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd")
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return int(layers), int(kv_heads), int(head_dim)


def _encoder_inputs(model: nn.Module) -> list[str]:
    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params and int(getattr(model.config, "type_vocab_size", 0) or 0) > 1:
        names.append("token_type_ids")
    return names


def _example_ids(config: Any, shape: tuple[int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, int(config.vocab_size), shape, generator=g)


def to_onnx(model: nn.Module | str | os.PathLike, output_dir: str | os.PathLike, task: str | None = None,
            opset: int = DEFAULT_OPSET, tokenizer: Any = None, file_name: str = "model.onnx",
            external_data: bool | None = None, **load_kwargs: Any) -> Path:
    """Export ``model`` (a loaded openformers model, or a name/path to load for ``task``) to
    ``output_dir/model.onnx``, with ``config.json``, the generation config and the tokenizer
    beside it. Returns the path of the ``.onnx`` file.

    ``task``: feature-extraction, text-classification, token-classification, question-answering,
    fill-mask, text-generation or text-generation-with-past (default: from the model class; causal
    LMs export with past key values). ``opset``: the ONNX opset (default 18). ``tokenizer``: a
    tokenizer object or path to save beside (default: the model's own directory, when it has one).
    ``external_data``: weights in ``model.onnx.data`` (default: only above 1.8 GB, the protobuf limit).
    """
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's translator)
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the 'export' extra: pip install 'openformers[export]' ({exc})") from exc
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        task = normalize_task(task or "feature-extraction")
        model = auto_class(TASKS[task][0]).from_pretrained(source, **load_kwargs)
        if tokenizer is None:
            tokenizer = source
    else:
        task = normalize_task(task) if task is not None else infer_task(model)
    _check_head(model, task)
    config = model.config
    head, output_names = TASKS[task]
    if head == "base" and hasattr(model, "base_model") and model.base_model is not model:
        model = model.base_model  # feature extraction from a head model: its encoder's hidden states
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"to_onnx: output_dir {out_dir} is a file; give a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / file_name

    # positions past the position table (GPT-2, BERT) cannot run: the traced graph is limited to it
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    limit = {"max": int(max_pos)} if max_pos else {}
    batch = torch.export.Dim("batch_size")
    seq = torch.export.Dim("sequence_length", **limit)
    if head == "causal-lm":
        with_past = task == "text-generation-with-past"
        n_layers, kv_heads, head_dim = kv_shape(config)
        past_len, new_len = (3, 4) if with_past else (0, 5)
        ids = _example_ids(config, (2, new_len))
        mask = torch.ones(2, past_len + new_len, dtype=torch.long)
        mask[1, :2] = 0  # a left-padded row: the mask path is traced (it is always built while exporting)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past_len:]
        args: list[torch.Tensor] = [ids, mask, positions]
        input_names = ["input_ids", "attention_mask", "position_ids"]
        dynamic: list[Any] = [{0: batch, 1: seq}, {0: batch, 1: torch.export.Dim.DYNAMIC}, {0: batch, 1: seq}]
        out_names = list(output_names)
        if with_past:
            dtype = next(model.parameters()).dtype
            past_dim = torch.export.Dim("past_sequence_length", **limit)
            for i in range(n_layers):
                for kind in ("key", "value"):
                    args.append(torch.randn(2, kv_heads, past_len, head_dim, dtype=dtype))
                    input_names.append(f"past_key_values.{i}.{kind}")
                    dynamic.append({0: batch, 2: past_dim})
                    out_names.append(f"present.{i}.{kind}")
        wrapper: nn.Module = _DecoderWrapper(model, with_past, n_layers)
    else:
        input_names = _encoder_inputs(model)
        ids = _example_ids(config, (2, 6))
        mask = torch.ones(2, 6, dtype=torch.long)
        mask[1, 4:] = 0
        values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        args = [values[n] for n in input_names]
        dynamic = [{0: batch, 1: seq} for _ in input_names]
        out_names = list(output_names)
        wrapper = _EncoderWrapper(model, input_names, output_names)
    if external_data is None:
        external_data = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8e9


    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            # the wrappers take varargs, which torch.export sees as one entry
            dynamic = [*dynamic[:3], tuple(dynamic[3:])] if head == "causal-lm" else [tuple(dynamic)]
            program = torch.onnx.export(
                wrapper, tuple(args), None, input_names=input_names, output_names=out_names,
                dynamic_shapes=tuple(dynamic), opset_version=opset, dynamo=True, verbose=False,
            )
    finally:
        model.train(was_training)
    if onnx_path.exists():
        onnx_path.unlink()
    program.save(str(onnx_path), external_data=external_data)
    config.save_pretrained(out_dir)
    gen = getattr(model, "generation_config", None)
    if head == "causal-lm" and gen is not None and hasattr(gen, "save_pretrained"):
        gen.save_pretrained(out_dir)
    _save_tokenizer(tokenizer, model, out_dir)
    logger.info("exported %s (%s) to %s", type(model).__name__, task, onnx_path)
    return onnx_path


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints its progress to stdout and logs torchvision notices: keep them out."""
    import io
    import sys

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    stdout = sys.stdout
    sys.stdout = io.StringIO()
    try:
        yield
    finally:
        sys.stdout = stdout
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _save_tokenizer(tokenizer: Any, model: nn.Module, out_dir: Path) -> None:
    if tokenizer is None:
        source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
        if not source or not Path(source).is_dir():
            return
        tokenizer = source
    if isinstance(tokenizer, (str, os.PathLike)):
        from openformers.tokenization.auto import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        except (OSError, ValueError) as exc:
            logger.warning("to_onnx: no tokenizer saved beside the model (%s)", exc)
            return
    tokenizer.save_pretrained(out_dir)
