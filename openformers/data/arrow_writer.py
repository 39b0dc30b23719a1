"""Cache locations and atomic, streaming Arrow file writing / memory-mapped reading."""
from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import pyarrow as pa

from openformers.core import settings

logger = logging.getLogger("openformers")


def cache_root() -> Path:
    """``$OPENFORMERS_DATA_CACHE``, else ``$OPENFORMERS_CACHE/datasets`` (``~/.cache/openformers/datasets``)."""
    return settings.get("OPENFORMERS_DATA_CACHE")


def read_arrow_file(path: str | os.PathLike) -> pa.Table:
    """Memory-map an Arrow IPC file (stream or file format) as a zero-copy table.

    A truncated or corrupt file raises ``ValueError`` naming it."""
    try:
        source = pa.memory_map(str(path), "r")
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source = pa.memory_map(str(path), "r")
            return pa.ipc.open_file(source).read_all()
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable Arrow IPC file (truncated or corrupt?): {err}") from None


def read_cached_arrow(path: str | os.PathLike) -> pa.Table | None:
    """A cache file's table, or None when it is unreadable: the file is removed (with a warning
    naming it) so the caller rebuilds it."""
    try:
        return read_arrow_file(path)
    except ValueError as err:
        logger.warning("Ignoring the unreadable cache file %s and rebuilding it: %s", path, err)
        try:
            os.unlink(path)
        except OSError:
            pass
        return None


ORPHAN_AGE_S = 3600.0


def remove_orphaned_temporaries(directory: str | os.PathLike, max_age_s: float = ORPHAN_AGE_S) -> list[str]:
    """Delete the temporary files (``.tmp-*.arrow``) a killed process left in a cache folder:
    those untouched for ``max_age_s`` seconds (a live writer keeps its file's time fresh)."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(".tmp-") and entry.name.endswith(".arrow"):
            try:
                if now - entry.stat().st_mtime > max_age_s:
                    os.unlink(entry.path)
                    removed.append(entry.path)
            except OSError:
                pass
    return removed


class ArrowWriter:
    """Writes record batches incrementally to ``path`` via a temporary file renamed on success.

    When the target directory cannot be written (read-only cache), it warns once and keeps
    the batches in memory instead; :meth:`finalize` then returns an in-memory table. A failure
    while writing removes the temporary file, so no half-written cache file is ever visible.
    """

    def __init__(self, path: str | os.PathLike | None, schema: pa.Schema | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.schema = schema
        self._tmp: str | None = None
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._memory: list[pa.RecordBatch] | None = None if path is not None else []
        self.num_rows = 0
        self.written_path: Path | None = None  # set once the file is published

    def _open(self, schema: pa.Schema) -> None:
        self.schema = schema
        if self._memory is not None:
            return
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".arrow")
            os.close(fd)
            self._sink = pa.OSFile(self._tmp, "wb")
            self._writer = pa.ipc.new_stream(self._sink, schema)
        except OSError as err:
            self._cleanup()
            warnings.warn(
                f"Cannot write the cache file {self.path} ({err}); keeping the result in memory. "
                "Set OPENFORMERS_DATA_CACHE to a writable directory to cache results on disk.",
                stacklevel=3,
            )
            self._memory = []

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self._writer is None and self._memory is None:
            self._open(self.schema or batch.schema)
        elif self.schema is None:  # in memory: the first table fixes the columns, even with no rows
            self.schema = batch.schema
        if self.schema is not None and batch.schema != self.schema:
            batch = cast_to_schema(batch, self.schema)
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        for b in batches:
            if self._memory is not None:
                self._memory.append(b)
            else:
                assert self._writer is not None
                self._writer.write_batch(b)
            self.num_rows += b.num_rows

    def finalize(self) -> pa.Table:
        """Close, publish the file atomically and return it memory-mapped (or the memory table)."""
        if self._writer is None and self._memory is None:
            self._open(self.schema or pa.schema([]))
        if self._memory is not None:
            return pa.Table.from_batches(self._memory, schema=self.schema)
        assert self._writer is not None and self._sink is not None and self.path is not None
        self._writer.close()
        self._sink.close()
        os.replace(self._tmp, self.path)  # atomic publish
        self._tmp = None
        self.written_path = self.path
        return read_arrow_file(self.path)

    def abort(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        for obj in (self._writer, self._sink):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001 - best effort while unwinding another error
                pass
        self._writer = self._sink = None
        if self._tmp is not None and os.path.exists(self._tmp):
            os.remove(self._tmp)
        self._tmp = None


def cast_to_schema(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    """Cast a batch to ``schema`` (same column names), naming the column that does not fit."""
    if batch.schema.names != schema.names:
        raise ValueError(
            f"Batch columns {batch.schema.names} differ from the dataset columns {schema.names}; "
            "a function must return the same columns for every batch."
        )
    arrays = []
    for name, col, field in zip(schema.names, batch.columns, schema):
        if col.type == field.type:
            arrays.append(col)
            continue
        try:
            arrays.append(col.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            raise TypeError(
                f"Column {name!r} has type {col.type} in this batch but {field.type} before; "
                f"return the same type for every batch ({err})"
            ) from None
    cls = pa.Table if isinstance(batch, pa.Table) else pa.RecordBatch
    return cls.from_arrays(arrays, schema=schema)
