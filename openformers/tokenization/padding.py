"""Padding/truncation argument resolution and padding of already-encoded features."""
from __future__ import annotations

from typing import Any

from .batch_encoding import BatchEncoding

PADDING = {"longest", "max_length", "do_not_pad"}
TRUNCATION = {"longest_first", "only_first", "only_second", "do_not_truncate"}
LARGE_INTEGER = int(1e20)  # above this, model_max_length means "no limit was set"


def _value(x: Any) -> Any:
    return getattr(x, "value", x)  # accept enum members (PaddingStrategy.LONGEST)


def resolve_strategies(padding: Any, truncation: Any, max_length: int | None, model_max_length: int,
                       pad_to_multiple_of: int | None = None) -> tuple[str, str, int | None]:
    """Normalise ``padding`` / ``truncation`` / ``max_length`` the way the Hugging Face API does."""
    padding, truncation = _value(padding), _value(truncation)
    if truncation is None and max_length is not None and padding in (False, None, "do_not_pad"):
        truncation = True  # max_length alone means "truncate to it"
    if padding is True:
        pad = "longest"
    elif padding is False or padding is None:
        pad = "do_not_pad"
    elif padding in PADDING:
        pad = padding
    else:
        raise ValueError(f"padding={padding!r} is not valid; use True, False, 'longest', 'max_length' or 'do_not_pad'")
    if truncation is True:
        trunc = "longest_first"
    elif truncation is False or truncation is None:
        trunc = "do_not_truncate"
    elif truncation in TRUNCATION:
        trunc = truncation
    else:
        raise ValueError(f"truncation={truncation!r} is not valid; use True, False, 'longest_first', "
                         "'only_first', 'only_second' or 'do_not_truncate'")
    if max_length is None:
        if pad == "max_length":
            if model_max_length > LARGE_INTEGER:
                raise ValueError("padding='max_length' needs max_length= because the tokenizer has no "
                                 "model_max_length")
            max_length = model_max_length
        if trunc != "do_not_truncate":
            if model_max_length > LARGE_INTEGER:
                trunc = "do_not_truncate"  # nothing to truncate to
            else:
                max_length = model_max_length
    if max_length is not None and max_length <= 0 and trunc != "do_not_truncate":
        raise ValueError(f"max_length must be positive to truncate, got {max_length}")
    if (pad_to_multiple_of and max_length and trunc != "do_not_truncate" and pad != "do_not_pad"
            and max_length % pad_to_multiple_of):
        raise ValueError(f"truncation and padding are both on, so max_length ({max_length}) must be a multiple of "
                         f"pad_to_multiple_of ({pad_to_multiple_of})")
    return pad, trunc, max_length


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def pad_features(tokenizer: Any, encoded_inputs: Any, padding: Any = True, max_length: int | None = None,
                 pad_to_multiple_of: int | None = None, padding_side: str | None = None,
                 return_attention_mask: bool | None = None, return_tensors: str | None = None) -> BatchEncoding:
    """Pad ``input_ids`` (and attention_mask, token_type_ids, special_tokens_mask) to a common length.

    Accepts a dict of lists (or a BatchEncoding) or a list of dicts; other keys pass through
    unchanged. Tensors in the input make ``return_tensors`` default to the same framework.
    """
    if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict | BatchEncoding):
        keys = list(encoded_inputs[0].keys())
        for i, item in enumerate(encoded_inputs):
            if set(item.keys()) != set(keys):
                raise ValueError(f"pad: feature {i} has keys {sorted(item.keys())} but feature 0 has {sorted(keys)}")
        encoded_inputs = {k: [item[k] for item in encoded_inputs] for k in keys}
    if not isinstance(encoded_inputs, (dict, BatchEncoding)):
        raise TypeError("pad expects a dict of features or a list of dicts (each with 'input_ids'), "
                        f"got {type(encoded_inputs).__name__}")
    if "input_ids" not in encoded_inputs:
        raise ValueError(f"pad needs 'input_ids' among the features; got keys {sorted(encoded_inputs.keys())}")
    ids0 = encoded_inputs["input_ids"]
    if return_tensors is None:
        sample = ids0[0] if isinstance(ids0, (list, tuple)) and len(ids0) else ids0
        if type(sample).__module__.startswith("torch"):
            return_tensors = "pt"
        elif type(sample).__module__.startswith("numpy"):
            return_tensors = "np"
    data = {k: _plain(v) for k, v in encoded_inputs.items()}
    input_ids = data["input_ids"]
    if not input_ids:
        return BatchEncoding(data, tensor_type=return_tensors)
    single = not isinstance(input_ids[0], (list, tuple))
    if single:
        data = {k: [v] for k, v in data.items()}
        input_ids = data["input_ids"]
    pad, _, max_length = resolve_strategies(padding, False, max_length, tokenizer.model_max_length)
    if return_attention_mask is None:
        return_attention_mask = "attention_mask" in tokenizer.model_input_names
    longest = max(len(ids) for ids in input_ids)
    target = longest if pad == "longest" else max_length
    if pad != "do_not_pad" and pad_to_multiple_of and target % pad_to_multiple_of:
        target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
    side = padding_side or tokenizer.padding_side
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    needs_pad = pad != "do_not_pad" and any(len(ids) < target for ids in input_ids)
    if needs_pad and tokenizer.pad_token_id is None:
        raise ValueError("padding was requested but the tokenizer has no pad token; set one with "
                         "tokenizer.pad_token = tokenizer.eos_token or "
                         "tokenizer.add_special_tokens({'pad_token': '[PAD]'})")
    if return_attention_mask and "attention_mask" not in data:
        data["attention_mask"] = [[1] * len(ids) for ids in input_ids]
    fill = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0,
            "token_type_ids": tokenizer.pad_token_type_id, "special_tokens_mask": 1}
    out = {k: [list(x) if isinstance(x, (list, tuple)) else x for x in v] for k, v in data.items()}
    if pad != "do_not_pad":
        for i, ids in enumerate(input_ids):
            diff = target - len(ids)
            if diff <= 0:
                continue
            for key, value in fill.items():
                if key in out:
                    seq = out[key][i]
                    out[key][i] = seq + [value] * diff if side == "right" else [value] * diff + seq
    if single:
        out = {k: v[0] for k, v in out.items()}
    return BatchEncoding(out, tensor_type=return_tensors, prepend_batch_axis=False)
