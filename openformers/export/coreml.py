"""CoreML export of the encoder families: ``to_coreml(model, "out/model.mlpackage", task=...)``.

The model is captured with ``torch.export`` (plain module math: eval mode and autograd on, so the
inference runtime steps aside; masks always built) and converted by ``coremltools`` to an ML program
with flexible batch and sequence sizes (up to the position table). Conversion runs anywhere;
running the ``.mlpackage`` needs macOS (CoreML), so on Linux only its program (inputs, outputs,
operations) can be checked.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openformers.export.onnx import TASKS, _check_head, _EncoderWrapper, _encoder_inputs, _save_tokenizer, auto_class, \
    infer_task, normalize_task

ENCODER_TASKS = ("feature-extraction", "text-classification", "token-classification", "question-answering", "fill-mask")


def to_coreml(model: nn.Module | str | os.PathLike, output_path: str | os.PathLike, task: str | None = None,
              precision: str = "float32", minimum_deployment_target: str = "iOS16", max_length: int | None = None,
              tokenizer: Any = None, **load_kwargs: Any) -> Path:
    """Convert an encoder (a loaded model, or a name/path to load for ``task``) to a CoreML ML
    program at ``output_path`` (a ``.mlpackage`` directory; the config and tokenizer are saved in
    its parent folder). ``precision``: "float32" (the PyTorch values) or "float16" (smaller,
    the Neural Engine's). ``max_length``: the longest sequence (default: the position table)."""
    try:
        import coremltools as ct
    except ImportError as exc:
        raise ImportError("CoreML export needs coremltools: pip install 'openformers[coreml]'") from exc
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        task = normalize_task(task or "feature-extraction")
        model = auto_class(TASKS[task][0]).from_pretrained(source, **load_kwargs)
        tokenizer = tokenizer if tokenizer is not None else source
    else:
        task = normalize_task(task) if task is not None else infer_task(model)
    if task not in ENCODER_TASKS:
        raise ValueError(f"CoreML export covers the encoder tasks {ENCODER_TASKS}, not {task!r}; "
                         f"export decoders with to_onnx (text-generation-with-past)")
    _check_head(model, task)
    if precision not in ("float32", "float16"):
        raise ValueError(f"precision={precision!r}: use 'float32' or 'float16'")
    head, output_names = TASKS[task]
    if head == "base" and hasattr(model, "base_model") and model.base_model is not model:
        model = model.base_model
    config = model.config
    limit = int(max_length or getattr(config, "max_position_embeddings", 512))
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta"):
        limit = min(limit, limit - int(getattr(config, "pad_token_id", 1) or 1) - 1)  # positions start after pad
    input_names = _encoder_inputs(model)
    wrapper = _EncoderWrapper(model, input_names, output_names)
    ids = torch.ones(2, 8, dtype=torch.long)
    values = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    batch = torch.export.Dim("batch_size", min=1, max=1024)
    seq = torch.export.Dim("sequence_length", min=1, max=limit)


    class _Named(nn.Module):  # named inputs, so the CoreML program's inputs carry the tokenizer's names
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.inner(*[given[n] for n in input_names])

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                _Named(wrapper), tuple(values[n] for n in input_names),
                dynamic_shapes=tuple({0: batch, 1: seq} for _ in input_names))
            program = program.run_decompositions({})
            target = getattr(ct.target, minimum_deployment_target)
            mlmodel = ct.convert(
                program, convert_to="mlprogram", minimum_deployment_target=target,
                compute_precision=ct.precision.FLOAT32 if precision == "float32" else ct.precision.FLOAT16,
                outputs=[ct.TensorType(name=n) for n in output_names],
            )
    finally:
        model.train(was_training)
    mlmodel.short_description = f"{type(model).__name__} ({task}) exported by openformers"
    mlmodel.user_defined_metadata["task"] = task
    mlmodel.user_defined_metadata["model_type"] = str(config.model_type)
    out = Path(output_path)
    if out.suffix != ".mlpackage":
        out = out / "model.mlpackage"
    out.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(out))
    config.save_pretrained(out.parent)
    _save_tokenizer(tokenizer, model, out.parent)
    return out
