"""The checkpoint layout of bitsandbytes-quantized layers, as transformers + bitsandbytes write it.

A 4-bit layer ``<name>`` is saved as

* ``<name>.weight``: the packed codes, uint8 ``[ceil(n / 2), 1]`` (or viewed as the quant storage dtype);
* ``<name>.weight.absmax``: float32 per block, or uint8 codes when double-quantized;
* ``<name>.weight.quant_map``: float32 ``[16]``, the 4-bit code book;
* ``<name>.weight.nested_absmax`` / ``<name>.weight.nested_quant_map``: float32 scales of the
  8-bit absmax codes and the 256-entry code book they index (double quantization only);
* ``<name>.weight.quant_state.bitsandbytes__nf4`` (or ``__fp4``): a uint8 tensor holding the UTF-8
  JSON of ``quant_type``, ``blocksize``, ``dtype``, ``shape`` and, when double-quantized,
  ``nested_blocksize``, ``nested_dtype``, ``nested_offset``;
* ``<name>.bias`` when the layer has one.

An 8-bit layer is ``<name>.weight`` (int8 ``[out, in]``), ``<name>.SCB`` (float32 row absmax) and
``<name>.weight_format`` (uint8 scalar; 0 means row-major, the only format written to files).

Earlier versions of this library saved 4-bit layers as ``<name>.weight``, ``<name>.absmax``,
``<name>.nested_absmax`` and ``<name>.nested_offset``; those names still load.
"""
from __future__ import annotations

import json
from typing import Any

import torch

QUANT_STATE_KEY = "weight.quant_state.bitsandbytes__"
WEIGHT_FORMAT_ROW = 0


def pack_json(values: dict[str, Any]) -> torch.Tensor:
    """A dict as the uint8 tensor of its UTF-8 JSON text."""
    return torch.tensor(list(json.dumps(values).encode("utf-8")), dtype=torch.uint8)


def unpack_json(tensor: torch.Tensor, what: str) -> dict[str, Any]:
    """The dict a :func:`pack_json` tensor holds; ``ValueError`` naming ``what`` when it is not one."""
    if tensor.dtype != torch.uint8 or tensor.dim() != 1:
        raise ValueError(f"{what} must be a 1-d uint8 tensor of JSON text, got {tensor.dtype} of shape {tuple(tensor.shape)}")
    try:
        values = json.loads(bytes(tensor.tolist()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} does not hold JSON text ({exc}); the checkpoint file is damaged") from exc
    if not isinstance(values, dict):
        raise ValueError(f"{what} holds {type(values).__name__} JSON, expected an object")
    return values


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def parse_dtype(name: Any, what: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{what}: dtype {name!r} is not a torch dtype")
    return dtype


def quant_state_json(
    quant_type: str, blocksize: int, dtype: torch.dtype, shape: tuple[int, ...],
    nested_offset: float | None, nested_blocksize: int,
) -> torch.Tensor:
    """The ``weight.quant_state.bitsandbytes__<type>`` tensor (the keys in bitsandbytes' order)."""
    values: dict[str, Any] = {
        "quant_type": quant_type, "blocksize": blocksize, "dtype": dtype_name(dtype), "shape": list(shape),
    }
    if nested_offset is not None:
        values.update(nested_blocksize=nested_blocksize, nested_dtype="float32", nested_offset=nested_offset)
    return pack_json(values)


def read_quant_state(attr: str, tensor: torch.Tensor, shape: tuple[int, int]) -> dict[str, Any]:
    """Check and return the JSON of a ``weight.quant_state.bitsandbytes__<type>`` tensor."""
    suffix = attr[len(QUANT_STATE_KEY):]
    values = unpack_json(tensor, attr)
    quant_type = values.get("quant_type")
    if quant_type not in ("nf4", "fp4") or quant_type != suffix:
        raise ValueError(f"{attr}: quant_type {quant_type!r} in a tensor named for {suffix!r}; expected 'nf4' or 'fp4'")
    saved_shape = tuple(values.get("shape") or ())
    if saved_shape != shape:
        raise ValueError(f"{attr}: the packed weight is of shape {list(saved_shape)}, the layer is {list(shape)}")
    blocksize = values.get("blocksize")
    if not isinstance(blocksize, int) or blocksize <= 0 or blocksize % 2:
        raise ValueError(f"{attr}: blocksize {blocksize!r} is not a positive even number")
    if "nested_offset" in values:
        nested_blocksize = values.get("nested_blocksize")
        if not isinstance(nested_blocksize, int) or nested_blocksize <= 0:
            raise ValueError(f"{attr}: nested_blocksize {nested_blocksize!r} is not a positive number")
        if values.get("nested_dtype", "float32") != "float32":
            raise ValueError(f"{attr}: nested_dtype {values.get('nested_dtype')!r} is not supported; expected 'float32'")
    return values


__all__ = ["QUANT_STATE_KEY", "WEIGHT_FORMAT_ROW", "pack_json", "unpack_json", "quant_state_json", "read_quant_state"]
