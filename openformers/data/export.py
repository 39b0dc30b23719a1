"""Writing a Dataset to CSV, JSON lines and Parquet, batch by batch."""
from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .arrow_dataset import Dataset


class _CountingWriter:
    def __init__(self, fh: Any) -> None:
        self.fh, self.written = fh, 0

    def write(self, data: str | bytes) -> None:
        if isinstance(data, str) and isinstance(self.fh, (io.RawIOBase, io.BufferedIOBase)):
            data = data.encode("utf-8")
        self.fh.write(data)
        self.written += len(data.encode("utf-8") if isinstance(data, str) else data)


def _open(path_or_buf: Any, mode: str) -> tuple[Any, bool]:
    if isinstance(path_or_buf, (str, os.PathLike)):
        os.makedirs(os.path.dirname(os.path.abspath(path_or_buf)), exist_ok=True)
        return open(path_or_buf, mode, encoding="utf-8", newline=""), True
    return path_or_buf, False


def write_csv(ds: "Dataset", path_or_buf: Any, batch_size: int, **kwargs: Any) -> int:
    """Write with pandas' CSV writer (header once, no index by default); returns bytes written."""
    kwargs.setdefault("index", False)
    header = kwargs.pop("header", True)
    fh, close = _open(path_or_buf, "w")
    out = _CountingWriter(fh)
    try:
        for i, start in enumerate(range(0, max(len(ds), 1), batch_size)):
            df = ds._rows(start, min(start + batch_size, len(ds))).to_pandas()
            out.write(df.to_csv(header=header if i == 0 else False, **kwargs))
    finally:
        if close:
            fh.close()
    return out.written


def _json_default(o: Any) -> Any:
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.decode("utf-8", errors="replace")
    return str(o)


def write_json(ds: "Dataset", path_or_buf: Any, batch_size: int, lines: bool = True, orient: str = "records",
               force_ascii: bool = False, **kwargs: Any) -> int:
    """JSON lines (default) or one JSON array (``lines=False``) of row records."""
    if orient != "records":
        raise ValueError(f"to_json: only orient='records' is supported, got {orient!r}")
    fh, close = _open(path_or_buf, "w")
    out = _CountingWriter(fh)
    try:
        if not lines:
            out.write("[")
        first = True
        for start in range(0, len(ds), batch_size):
            rows = ds._rows(start, min(start + batch_size, len(ds))).to_pylist()
            if lines:
                out.write("".join(json.dumps(r, ensure_ascii=force_ascii, default=_json_default) + "\n" for r in rows))
            else:
                for r in rows:
                    out.write(("" if first else ",") + json.dumps(r, ensure_ascii=force_ascii, default=_json_default))
                    first = False
        if not lines:
            out.write("]")
    finally:
        if close:
            fh.close()
    return out.written


def write_parquet(ds: "Dataset", path_or_buf: Any, batch_size: int, **kwargs: Any) -> int:
    """Parquet with the feature description kept in the schema metadata."""
    import pyarrow.parquet as pq

    schema = ds._data.schema
    if isinstance(path_or_buf, (str, os.PathLike)):
        os.makedirs(os.path.dirname(os.path.abspath(path_or_buf)), exist_ok=True)
    with pq.ParquetWriter(path_or_buf, schema=schema, **kwargs) as writer:
        for start in range(0, len(ds), batch_size):
            writer.write_table(ds._rows(start, min(start + batch_size, len(ds))).cast(schema))
    if isinstance(path_or_buf, (str, os.PathLike)):
        return os.path.getsize(path_or_buf)
    return 0
