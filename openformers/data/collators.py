"""Data collators: turn a list of examples into a padded batch of tensors.

Names, arguments and outputs follow the Hugging Face collators, so Trainer code written for
them works unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_LABEL_KEYS = ("label", "label_ids")


def _as_dicts(features: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for i, f in enumerate(features):
        if isinstance(f, Mapping):
            out.append(dict(f))
        elif hasattr(f, "__dict__"):
            out.append(dict(vars(f)))
        else:
            raise TypeError(f"feature {i} is a {type(f).__name__}; collators expect dicts of model inputs")
    return out


def _tensor(values: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values if dtype is None else values.to(dtype)
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], torch.Tensor):
        return torch.stack(list(values)) if dtype is None else torch.stack(list(values)).to(dtype)
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], np.ndarray):
        values = np.stack(values)
    return torch.as_tensor(values, dtype=dtype) if dtype is not None else torch.as_tensor(values)


def _convert(batch: dict[str, Any], return_tensors: str | None) -> dict[str, Any]:
    if return_tensors == "pt":
        return {k: _tensor(v) for k, v in batch.items()}
    if return_tensors == "np":
        return {k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    return batch


def default_data_collator(features: Sequence[Any], return_tensors: str = "pt") -> dict[str, Any]:
    """Stack already-equal-length features; ``label``/``label_ids`` become ``labels``.

    Integer labels become int64, float labels float32; strings and None are dropped.
    """
    feats = _as_dicts(features)
    if not feats:
        return {}
    first = feats[0]
    batch: dict[str, Any] = {}
    for key in _LABEL_KEYS:
        if key in first and first[key] is not None:
            value = first[key]
            value = value.item() if isinstance(value, torch.Tensor) and value.dim() == 0 else value
            probe = np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value)
            dtype = torch.long if np.issubdtype(probe.dtype, np.integer) else torch.float
            batch["labels"] = _tensor([f[key] for f in feats], dtype)
            break
    for key, value in first.items():
        if key in _LABEL_KEYS or value is None or isinstance(value, str):
            continue
        batch[key] = _tensor([f[key] for f in feats])
    return _convert(batch, return_tensors) if return_tensors != "pt" else batch


@dataclass
class DataCollatorWithPadding:
    """Pad model inputs to the longest example (or ``max_length``) with the tokenizer's pad token."""

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __call__(self, features: Sequence[Any]) -> dict[str, Any]:
        feats = _as_dicts(features)
        labels = None
        for key in _LABEL_KEYS:
            if feats and key in feats[0]:
                labels = [f.pop(key) for f in feats]
                for f in feats:
                    f.pop("labels", None)
                break
        batch = dict(self.tokenizer.pad(feats, padding=self.padding, max_length=self.max_length,
                                        pad_to_multiple_of=self.pad_to_multiple_of, return_tensors=self.return_tensors))
        if labels is not None:
            batch["labels"] = _tensor(labels) if self.return_tensors == "pt" else np.asarray(labels)
        return batch


def _pad_sequences(seqs: list[list[int]], value: int, side: str, length: int) -> list[list[int]]:
    out = []
    for s in seqs:
        s = list(s)
        pad = [value] * (length - len(s))
        out.append(pad + s if side == "left" else s + pad)
    return out


def _target_length(lengths: list[int], max_length: int | None, padding: bool | str, multiple: int | None) -> int:
    length = max_length if padding == "max_length" and max_length else max(lengths)
    if multiple:
        length = -(-length // multiple) * multiple
    return length


@dataclass
class DataCollatorForTokenClassification:
    """Pad inputs and per-token ``labels`` (with ``label_pad_token_id``, -100 by default)."""

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    return_tensors: str = "pt"

    def __call__(self, features: Sequence[Any]) -> dict[str, Any]:
        feats = _as_dicts(features)
        label_key = "label" if feats and "label" in feats[0] else "labels"
        labels = [list(_plain(f.pop(label_key))) for f in feats] if feats and label_key in feats[0] else None
        batch = dict(self.tokenizer.pad(feats, padding=self.padding, max_length=self.max_length,
                                        pad_to_multiple_of=self.pad_to_multiple_of, return_tensors=None))
        if labels is not None:
            length = len(batch["input_ids"][0])
            batch["labels"] = _pad_sequences(labels, self.label_pad_token_id, self.tokenizer.padding_side, length)
        return _convert(batch, self.return_tensors)


def _plain(x: Any) -> Any:
    return x.tolist() if hasattr(x, "tolist") else x


@dataclass
class DataCollatorForSeq2Seq:
    """Pad inputs and ``labels`` separately (labels with -100); builds ``decoder_input_ids``
    when the model offers ``prepare_decoder_input_ids_from_labels``."""

    tokenizer: Any
    model: Any = None
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    return_tensors: str = "pt"

    def __call__(self, features: Sequence[Any]) -> dict[str, Any]:
        feats = _as_dicts(features)
        labels = [list(_plain(f.pop("labels"))) for f in feats] if feats and feats[0].get("labels") is not None else None
        batch = dict(self.tokenizer.pad(feats, padding=self.padding, max_length=self.max_length,
                                        pad_to_multiple_of=self.pad_to_multiple_of, return_tensors=None))
        if labels is not None:
            length = _target_length([len(l) for l in labels], self.max_length, self.padding, self.pad_to_multiple_of)
            batch["labels"] = _pad_sequences(labels, self.label_pad_token_id, self.tokenizer.padding_side, length)
        out = _convert(batch, self.return_tensors)
        if labels is not None and self.model is not None and hasattr(self.model, "prepare_decoder_input_ids_from_labels"):
            out["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=_tensor(out["labels"]))
        return out


@dataclass
class DataCollatorForLanguageModeling:
    """Language-modelling batches.

    ``mlm=True``: masks ``mlm_probability`` of the non-special tokens; of those,
    ``mask_replace_prob`` become the mask token, ``random_replace_prob`` a random token, the
    rest stay; labels are -100 elsewhere. ``mlm=False``: causal LM, labels are the inputs with
    padding set to -100 (the model shifts them).
    """

    tokenizer: Any
    mlm: bool = True
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.mlm and getattr(self.tokenizer, "mask_token", None) is None:
            raise ValueError("mlm=True needs a tokenizer with a mask token; use mlm=False for causal language modelling")
        if not 0 <= self.mlm_probability <= 1:
            raise ValueError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("mask_replace_prob + random_replace_prob must be <= 1")
        self.generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None

    def __call__(self, features: Sequence[Any]) -> dict[str, Any]:
        if features and not isinstance(features[0], Mapping):
            features = [{"input_ids": f} for f in features]
        feats = _as_dicts(features)
        special = [f.pop("special_tokens_mask") for f in feats] if feats and "special_tokens_mask" in feats[0] else None
        batch = dict(self.tokenizer.pad(feats, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"))
        input_ids = batch["input_ids"]
        if self.mlm:
            if special is not None:
                length = input_ids.shape[1]
                special_mask = torch.tensor(_pad_sequences([_plain(s) for s in special], 1, self.tokenizer.padding_side, length), dtype=torch.bool)
            else:
                special_mask = torch.isin(input_ids, torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=input_ids.dtype))
            batch["input_ids"], batch["labels"] = self.mask_tokens(input_ids, special_mask)
        else:
            labels = input_ids.clone()
            if self.tokenizer.pad_token_id is not None:
                if "attention_mask" in batch:
                    labels[batch["attention_mask"] == 0] = -100
                else:
                    labels[labels == self.tokenizer.pad_token_id] = -100
            batch["labels"] = labels
        return _convert(batch, self.return_tensors) if self.return_tensors != "pt" else batch

    def mask_tokens(self, inputs: torch.Tensor, special_tokens_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = inputs.clone(), inputs.clone()
        g = self.generator
        prob = torch.full(labels.shape, self.mlm_probability).masked_fill(special_tokens_mask, 0.0)
        masked = torch.bernoulli(prob, generator=g).bool()
        labels[~masked] = -100
        replaced = torch.bernoulli(torch.full(labels.shape, self.mask_replace_prob), generator=g).bool() & masked
        inputs[replaced] = self.tokenizer.convert_tokens_to_ids(self.tokenizer.mask_token)
        remaining = 1 - self.mask_replace_prob
        random_share = self.random_replace_prob / remaining if remaining > 0 else 0.0
        randomised = torch.bernoulli(torch.full(labels.shape, random_share), generator=g).bool() & masked & ~replaced
        inputs[randomised] = torch.randint(len(self.tokenizer), labels.shape, dtype=inputs.dtype, generator=g)[randomised]
        return inputs, labels


class DataCollatorWithFlattening:
    """Padding-free batches: every example of the batch concatenated into one row ``[1, total]``.

    Returns ``input_ids``, ``labels`` (the example's labels, or its ``input_ids``, with the first token
    of every example set to ``separator_id`` so no example is scored on the one before it) and, with
    ``return_position_ids``, ``position_ids`` restarting at ``position_ids_start`` for every example.
    Decoder models see the restarts and attend within each example only (one block-diagonal causal
    mask, built once per forward). ``return_flash_attn_kwargs`` adds the cumulative lengths
    ``cu_seq_lens_q``/``cu_seq_lens_k`` and ``max_length_q``/``max_length_k``; ``return_seq_idx`` the
    index of each token's example.
    """

    def __init__(self, *args: Any, return_position_ids: bool = True, separator_id: int = -100,
                 return_flash_attn_kwargs: bool = False, return_seq_idx: bool = False, position_ids_start: int = 0,
                 return_tensors: str = "pt") -> None:
        if args:
            raise TypeError(f"DataCollatorWithFlattening takes keyword arguments only, got {len(args)} positional")
        self.return_position_ids = return_position_ids
        self.separator_id = separator_id
        self.return_flash_attn_kwargs = return_flash_attn_kwargs
        self.return_seq_idx = return_seq_idx
        self.position_ids_start = position_ids_start
        self.return_tensors = return_tensors

    def __call__(self, features: Sequence[Any], return_tensors: str | None = None,
                 separator_id: int | None = None) -> dict[str, Any]:
        return_tensors = self.return_tensors if return_tensors is None else return_tensors
        separator_id = self.separator_id if separator_id is None else separator_id
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        feats = _as_dicts(features)
        if not feats:
            raise ValueError("DataCollatorWithFlattening got an empty batch")
        with_labels = "labels" in feats[0]
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        seq_idx: list[int] = []
        cu_seq_lens = [0]
        for i, f in enumerate(feats):
            if "input_ids" not in f:
                raise ValueError(f"example {i} has no 'input_ids'; DataCollatorWithFlattening needs tokenized examples")
            ids = [int(t) for t in _plain(f["input_ids"])]
            if not ids:
                raise ValueError(f"example {i} has no tokens; drop empty examples before flattening")
            source = [int(t) for t in _plain(f["labels"])] if with_labels else ids
            if len(source) != len(ids):
                raise ValueError(f"example {i}: {len(source)} labels for {len(ids)} input_ids")
            input_ids += ids
            labels += [separator_id] + source[1:]
            positions += range(self.position_ids_start, self.position_ids_start + len(ids))
            seq_idx += [i] * len(ids)
            cu_seq_lens.append(cu_seq_lens[-1] + len(ids))
        batch: dict[str, Any] = {"input_ids": [input_ids], "labels": [labels]}
        if self.return_position_ids:
            batch["position_ids"] = [positions]
        if self.return_seq_idx:
            batch["seq_idx"] = [seq_idx]
        pt = return_tensors == "pt"
        out: dict[str, Any] = {}
        for key, value in batch.items():
            dtype32 = key == "seq_idx"
            if pt:
                out[key] = torch.tensor(value, dtype=torch.int32 if dtype32 else torch.int64)
            else:
                out[key] = np.array(value, dtype=np.int32 if dtype32 else np.int64)
        if self.return_flash_attn_kwargs:
            lengths = torch.tensor(cu_seq_lens, dtype=torch.int32) if pt else np.array(cu_seq_lens, dtype=np.int32)
            out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = lengths
            out["max_length_q"] = out["max_length_k"] = max(b - a for a, b in zip(cu_seq_lens, cu_seq_lens[1:]))
        return out
