"""Output formats for rows, batches and columns: python, numpy, torch, pandas, arrow."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

FORMAT_TYPES = (None, "python", "numpy", "np", "torch", "pt", "pandas", "pd", "arrow", "pa")
_CANONICAL = {"np": "numpy", "pt": "torch", "pd": "pandas", "pa": "arrow", "python": None}


def canonical_format(type: str | None) -> str | None:
    if type not in FORMAT_TYPES:
        raise ValueError(f"Unknown format type {type!r}; use one of {FORMAT_TYPES}")
    return _CANONICAL.get(type, type)  # type: ignore[arg-type]


def _numpy_column(col: pa.ChunkedArray | pa.Array) -> Any:
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        if col.null_count == 0:
            return col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(zero_copy_only=False)
        return np.array(col.to_pylist(), dtype=object if not pa.types.is_floating(t) else float)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.array(col.to_pylist())
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        values = col.to_pylist()
        arrays = [np.array(v) if v is not None else None for v in values]
        if arrays and all(a is not None for a in arrays) and len({a.shape for a in arrays}) == 1:
            return np.stack(arrays) if arrays[0].dtype != object else np.array(arrays, dtype=object)
        out = np.empty(len(arrays), dtype=object)
        out[:] = arrays
        return out
    return np.array(col.to_pylist(), dtype=object)


def _default_float32(arr: Any) -> Any:
    """Floats come out as float32 (the Hugging Face numpy/torch default); ragged rows per item."""
    if isinstance(arr, np.ndarray):
        if arr.dtype == object:
            out = np.empty(len(arr), dtype=object)
            out[:] = [_default_float32(a) for a in arr]
            return out
        if arr.dtype.kind == "f" and arr.dtype != np.float16:
            return arr.astype(np.float32)
    return arr


def _to_torch(value: Any) -> Any:
    import torch

    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_to_torch(v) for v in value]
        if value.dtype.kind in "US":
            return value.tolist()
        if value.dtype.kind == "f" and value.dtype != np.float16:
            return torch.from_numpy(np.array(value, dtype=np.float32))
        if value.dtype.kind in "iu":
            return torch.from_numpy(np.array(value, dtype=np.int64))
        return torch.from_numpy(np.array(value))
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return torch.tensor(int(value), dtype=torch.int64)
    if isinstance(value, (np.floating, float)):
        return torch.tensor(float(value), dtype=torch.float32)
    if isinstance(value, (np.bool_, bool)):
        return torch.tensor(bool(value))
    if isinstance(value, (list, tuple)):
        arr = np.array(value) if value and not any(isinstance(v, (list, tuple)) for v in value) else None
        if arr is not None and arr.dtype != object and arr.dtype.kind not in "US":
            return _to_torch(arr)
        return [_to_torch(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_torch(v) for k, v in value.items()}
    return value


def format_table(table: pa.Table, fmt: str | None, columns: list[str] | None, output_all: bool,
                 kwargs: dict[str, Any] | None = None) -> Any:
    """A batch of rows in the requested format (dict of columns, DataFrame or Table)."""
    selected = table if columns is None else table.select(columns)
    if fmt == "arrow":
        return selected
    if fmt == "pandas":
        return selected.to_pandas(types_mapper=None)
    out: dict[str, Any] = {}
    for name in selected.column_names:
        out[name] = format_column(selected, name, fmt)
    if output_all and columns is not None:
        for name in table.column_names:
            if name not in out:
                out[name] = table.column(name).to_pylist()
    return out


def format_row(table: pa.Table, fmt: str | None, columns: list[str] | None, output_all: bool) -> Any:
    """One row (a one-row table) in the requested format."""
    if fmt in ("arrow", "pandas"):
        return format_table(table, fmt, columns, output_all)
    batch = format_table(table, fmt, columns, output_all)
    return {k: v[0] for k, v in batch.items()}


def format_column(table: pa.Table, name: str, fmt: str | None) -> Any:
    """One column in the requested format (list, ndarray, tensor, Series or ChunkedArray)."""
    col = table.column(name)
    if fmt is None:
        return col.to_pylist()
    if fmt == "arrow":
        return col
    if fmt == "pandas":
        return table.select([name]).to_pandas()[name]
    arr = _numpy_column(col)
    if fmt == "numpy":
        return _default_float32(arr)
    return _to_torch(arr)
