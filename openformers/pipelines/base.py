"""The ``Pipeline`` base class: preprocess -> batched model forward -> postprocess.

Every task pipeline implements three steps:

* ``preprocess(item, **params)`` returns a list of *features* for one input. A feature is a dict
  holding the model inputs as 1-D token lists (``input_ids``, ``attention_mask``, ...) plus any
  metadata the later steps need. Most tasks make one feature per input; question answering (long
  contexts split in windows), zero-shot classification (one premise/hypothesis pair per label)
  and token classification with ``stride`` make several.
* ``_forward(model_inputs, **params)`` runs the model on a padded batch of features and returns
  a dict of batch-first tensors (or per-row lists).
* ``postprocess(outputs, **params)`` turns the outputs of one input's features into the result.

The engine in between groups features into batches of ``batch_size``. Inputs are read in chunks;
inside a chunk the features are sorted by length before batching (less padding) and the results
are put back in input order, so iterating over a generator streams results in order while only
one chunk is held in memory.
"""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import torch

# keys of a feature that are fed to the model; everything else is metadata
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def resolve_device(device: Any) -> torch.device | None:
    """``None`` (leave the model where it is), ``-1``/``"cpu"``, a CUDA index, a string or a ``torch.device``."""
    if device is None:
        return None
    if isinstance(device, torch.device):
        return device
    if isinstance(device, int):
        return torch.device("cpu") if device < 0 else torch.device(f"cuda:{device}")
    if isinstance(device, str):
        return torch.device(device)
    raise TypeError(f"device must be an int, a string or a torch.device, got {type(device).__name__}")


def _is_stream(inputs: Any) -> bool:
    """True for inputs that are iterated lazily: generators, iterators, datasets (KeyDataset, Dataset)."""
    if isinstance(inputs, (str, bytes, dict, list, tuple)):
        return False
    if isinstance(inputs, Iterator):
        return True
    # map-style datasets (torch Dataset, Dataset, KeyDataset): a length and integer indexing
    return hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__")


class Pipeline:
    """Base class of the task pipelines; build one with :func:`openformers.pipeline`.

    Calling the pipeline on one input returns one result; on a list, a list of results; on a
    generator or a dataset (e.g. ``KeyDataset(ds, "text")``), an iterator that yields results in
    order. Call keyword arguments override the ones given at construction.
    """

    task: str = ""
    # features from one input: one (False) or several that postprocess sees together (True)
    chunked: bool = False
    padding_side: str = "right"
    # output keys that hold one row per token: padding positions are cut from them
    token_outputs: tuple[str, ...] = ()

    def __init__(self, model: Any, tokenizer: Any = None, task: str = "", device: Any = None,
                 dtype: Any = None, batch_size: int | None = None, num_workers: int | None = None,
                 progress_bar: bool = False, **kwargs: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        if task:
            self.task = task
        self.device = resolve_device(device)
        if self.device is not None:
            self.model.to(self.device)
        else:
            try:
                self.device = next(self.model.parameters()).device
            except (StopIteration, AttributeError):
                self.device = torch.device("cpu")
        if dtype is not None and dtype != "auto":
            from openformers.core.modeling import to_torch_dtype

            self.model.to(to_torch_dtype(dtype))
        if hasattr(self.model, "eval"):
            self.model.eval()
        self.dtype = getattr(self.model, "dtype", None)
        self._batch_size = batch_size
        self._num_workers = num_workers
        self._progress_bar = progress_bar
        self._preprocess_params, self._forward_params, self._postprocess_params = self._sanitize_parameters(**kwargs)

    # ---- task hooks: subclasses define _sanitize_parameters, preprocess, _forward, postprocess ----
    def _is_single(self, inputs: Any) -> bool:
        """Whether ``inputs`` is one example (not a batch or a stream of them)."""
        return not isinstance(inputs, (list, tuple)) and not _is_stream(inputs)

    def _unknown_kwargs(self, kwargs: dict[str, Any]) -> None:
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) {sorted(kwargs)}")

    # ---- public API -------------------------------------------------------------------------
    def __call__(self, inputs: Any = None, *args: Any, batch_size: int | None = None,
                 num_workers: int | None = None, progress_bar: bool | None = None, **kwargs: Any) -> Any:
        if args:
            raise TypeError(f"{type(self).__name__} takes one positional input (a text, a list, a generator "
                            f"or a dataset); got {1 + len(args)}. Pass options as keyword arguments.")
        if inputs is None:
            raise ValueError(f"{type(self).__name__}: no input given")
        pre, fwd, post = self._sanitize_parameters(**kwargs)
        pre = {**self._preprocess_params, **pre}
        fwd = {**self._forward_params, **fwd}
        post = {**self._postprocess_params, **post}
        bs = batch_size if batch_size is not None else (self._batch_size or 1)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {bs}")
        workers = self._num_workers if num_workers is None else num_workers
        bar = self._progress_bar if progress_bar is None else progress_bar
        if self._is_single(inputs):
            return next(self._run([inputs], bs, workers, False, pre, fwd, post))
        if _is_stream(inputs):
            return self._run(inputs, bs, workers, bar, pre, fwd, post)
        return list(self._run(list(inputs), bs, workers, bar, pre, fwd, post))

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Save the model and the tokenizer to ``save_directory``."""
        self.model.save_pretrained(save_directory, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)

    # ---- engine -----------------------------------------------------------------------------
    def _run(self, inputs: Iterable[Any], batch_size: int, num_workers: int | None, progress_bar: bool,
             pre: dict[str, Any], fwd: dict[str, Any], post: dict[str, Any]) -> Iterator[Any]:
        if hasattr(inputs, "__iter__"):
            iterator = iter(inputs)
        else:  # a map-style dataset without __iter__ (torch.utils.data.Dataset)
            iterator = (inputs[i] for i in range(len(inputs)))  # type: ignore[index]
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(inputs) if hasattr(inputs, "__len__") else None, desc=self.task or "pipeline")
        # a chunk of inputs is sorted by length and batched together; a few batches' worth
        chunk_size = 1 if batch_size == 1 else batch_size * 8
        pool = ThreadPoolExecutor(num_workers) if num_workers and num_workers > 1 else None
        try:
            while True:
                chunk = list(itertools.islice(iterator, chunk_size))
                if not chunk:
                    break
                if pool is not None:
                    features = list(pool.map(lambda x: self.preprocess(x, **pre), chunk))
                else:
                    features = [self.preprocess(x, **pre) for x in chunk]
                flat = [f for feats in features for f in feats]
                outputs = self._forward_features(flat, batch_size, fwd)
                pos = 0
                for feats in features:
                    outs = outputs[pos:pos + len(feats)]
                    pos += len(feats)
                    yield self.postprocess(outs if self.chunked else outs[0], **post)
                    if bar is not None:
                        bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown()
            if bar is not None:
                bar.close()

    def _forward_features(self, features: list[dict[str, Any]], batch_size: int,
                          fwd: dict[str, Any]) -> list[dict[str, Any]]:
        """Run the model on every feature, ``batch_size`` at a time, shortest first; results in feature order."""
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        results: list[dict[str, Any] | None] = [None] * len(features)
        for idx in self._batches(order, features, batch_size):
            batch = [features[i] for i in idx]
            model_inputs, lengths = self._collate(batch)
            with torch.inference_mode():
                out = self._forward(model_inputs, **fwd)
            for row, (i, feat) in enumerate(zip(idx, batch)):
                results[i] = self._unbatch(out, row, lengths[row], model_inputs["input_ids"].shape[1], feat)
        return results  # type: ignore[return-value]

    def _batches(self, order: list[int], features: list[dict[str, Any]], batch_size: int) -> Iterator[list[int]]:
        if self._can_pad():
            for start in range(0, len(order), batch_size):
                yield order[start:start + batch_size]
            return
        # no pad token anywhere (GPT-2 style): rows cannot be padded, nor told apart by decoder
        # classification heads, so each feature runs on its own
        for i in order:
            yield [i]

    def _can_pad(self) -> bool:
        if getattr(self.tokenizer, "pad_token_id", None) is not None:
            return True
        return getattr(getattr(self.model, "config", None), "pad_token_id", None) is not None

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(getattr(self.model, "config", None), "pad_token_id", None)
        return 0 if pad is None else int(pad)

    def _collate(self, batch: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[int]]:
        lengths = [len(f["input_ids"]) for f in batch]
        width = max(lengths)
        pad_values = {"input_ids": self._pad_id(), "attention_mask": 0, "token_type_ids": 0}
        keys = [k for k in MODEL_INPUT_KEYS if k in batch[0]]
        if "attention_mask" not in keys and len(set(lengths)) > 1:
            keys.append("attention_mask")
        out = {}
        for key in keys:
            rows = []
            for f, n in zip(batch, lengths):
                values = list(f[key]) if key in f else [1] * n
                fill = [pad_values[key]] * (width - n)
                rows.append(fill + values if self.padding_side == "left" else values + fill)
            out[key] = torch.tensor(rows, dtype=torch.long, device=self.device)
        return out, lengths

    def _unbatch(self, out: dict[str, Any], row: int, length: int, width: int, feature: dict[str, Any]) -> dict[str, Any]:
        """Row ``row`` of the batch outputs, with padding positions cut from per-token tensors."""
        result = {k: v for k, v in feature.items() if k not in MODEL_INPUT_KEYS or k == "input_ids"}
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                value = value[row]
                if key in self.token_outputs and width != length:
                    value = value[width - length:] if self.padding_side == "left" else value[:length]
                result[key] = value.detach().cpu()
            else:
                result[key] = value[row]
        return result

    def _model_forward(self, model_inputs: dict[str, torch.Tensor]) -> Any:
        return self.model(**model_inputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={type(self.model).__name__}, device={self.device})"
