"""``Dataset``: a table of rows on Apache Arrow, memory-mapped from disk when loaded or mapped.

Row selection (select, shuffle, sort, filter, shard) is kept as an *indices mapping* over the
underlying table, as the Hugging Face library does, so it costs one int64 per row instead of a
copy of the data. Column operations (rename, cast, remove) act on the underlying table and keep
the mapping. The reordering transforms live in :mod:`.reorder` and the column operations in
:mod:`.columns`, mixed into :class:`Dataset`.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .arrow_writer import ArrowWriter, cache_root, read_arrow_file
from .columns import ColumnOpsMixin, _check_columns
from .conversion import attach_features, rows_to_columns, table_from_columns
from .features import Features
from .fingerprint import hash_table, update_fingerprint
from .formatting import canonical_format, format_column, format_row, format_table
from .info import DatasetInfo
from .reorder import ReorderMixin

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class Dataset(ReorderMixin, ColumnOpsMixin):
    """A dataset of rows backed by a ``pyarrow.Table`` (see the module docstring)."""

    def __init__(self, arrow_table: pa.Table, info: DatasetInfo | None = None, split: str | None = None,
                 indices_table: pa.Table | np.ndarray | None = None, fingerprint: str | None = None) -> None:
        from .features import features_from_metadata

        features = info.features if info is not None and info.features is not None else None
        if features is None:
            features = Features.from_arrow_schema(arrow_table.schema)
        elif list(features) != arrow_table.column_names:
            features = Features({k: features[k] if k in features else Features.from_arrow_schema(
                arrow_table.schema)[k] for k in arrow_table.column_names})
        stored = features_from_metadata(arrow_table.schema)
        if stored is None or stored.to_dict() != features.to_dict():
            arrow_table = attach_features(arrow_table, features)
        self._data: pa.Table = arrow_table
        if isinstance(indices_table, pa.Table):
            indices_table = indices_table.column(0).to_numpy()
        self._indices: np.ndarray | None = None if indices_table is None else np.asarray(indices_table, dtype=np.int64)
        self.info = copy.copy(info) if info is not None else DatasetInfo()
        self.info.features = features
        self._split = split
        self._fingerprint = fingerprint or hash_table(arrow_table)
        self._format_type: str | None = None
        self._format_columns: list[str] | None = None
        self._output_all_columns = False
        self._format_kwargs: dict[str, Any] = {}
        self._transform: Callable | None = None
        self._cache_files: list[str] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], features: Features | None = None,
                  info: DatasetInfo | None = None, split: str | None = None) -> "Dataset":
        """Build from ``{column: values}``."""
        if not isinstance(mapping, Mapping):
            raise TypeError(f"from_dict expects a dict of columns, got {type(mapping).__name__}")
        table, feats = table_from_columns(dict(mapping), Features(features) if features is not None else None)
        info = copy.copy(info) if info is not None else DatasetInfo()
        info.features = feats
        return cls(table, info=info, split=split)

    @classmethod
    def from_list(cls, mapping: list[dict[str, Any]], features: Features | None = None,
                  info: DatasetInfo | None = None, split: str | None = None) -> "Dataset":
        """Build from a list of row dicts (keys of the first rows define the columns)."""
        return cls.from_dict(rows_to_columns(list(mapping)), features=features, info=info, split=split)

    @classmethod
    def from_pandas(cls, df: "pd.DataFrame", features: Features | None = None, info: DatasetInfo | None = None,
                    split: str | None = None, preserve_index: bool | None = None) -> "Dataset":
        """Build from a pandas DataFrame (the index is kept only if it is not a plain range)."""
        try:
            table = pa.Table.from_pandas(df, preserve_index=preserve_index)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise TypeError(f"Cannot convert the DataFrame to Arrow: {err}") from None
        table = table.replace_schema_metadata(None)
        if features is not None:
            features = Features(features)
            table = table.cast(features.arrow_schema)
        info = copy.copy(info) if info is not None else DatasetInfo()
        info.features = features
        return cls(table, info=info, split=split)

    @classmethod
    def from_generator(cls, generator: Callable[..., Iterable[dict[str, Any]]], features: Features | None = None,
                       cache_dir: str | None = None, keep_in_memory: bool = False,
                       gen_kwargs: dict[str, Any] | None = None, split: str = "train",
                       writer_batch_size: int = 1000, **kwargs: Any) -> "Dataset":
        """Build from a generator of row dicts, written to the cache in batches of rows."""
        gen_kwargs = gen_kwargs or {}
        fp = update_fingerprint("generator", generator, gen_kwargs, Features(features).to_dict() if features else None)
        path = None if keep_in_memory else os.path.join(cache_dir or cache_root(), "generator", f"{fp}.arrow")
        if path is not None and os.path.exists(path) and not kwargs.get("force_redownload"):
            return cls(read_arrow_file(path), split=split, fingerprint=fp)
        writer = ArrowWriter(path)
        feats = Features(features) if features is not None else None
        rows: list[dict[str, Any]] = []
        try:
            for row in generator(**gen_kwargs):
                rows.append(row)
                if len(rows) >= writer_batch_size:
                    feats = _write_rows(writer, rows, feats)
                    rows = []
            if rows or writer.num_rows == 0:
                feats = _write_rows(writer, rows, feats)
            table = writer.finalize()
        except BaseException:
            writer.abort()
            raise
        ds = cls(table, split=split, fingerprint=fp)
        if writer.written_path is not None:
            ds._cache_files = [str(writer.written_path)]
        return ds

    @classmethod
    def from_csv(cls, path_or_paths: str | list[str], split: str = "train", **kwargs: Any) -> "Dataset":
        from .loading import load_dataset

        return load_dataset("csv", data_files=path_or_paths, split=split, **kwargs)

    @classmethod
    def from_json(cls, path_or_paths: str | list[str], split: str = "train", **kwargs: Any) -> "Dataset":
        from .loading import load_dataset

        return load_dataset("json", data_files=path_or_paths, split=split, **kwargs)

    @classmethod
    def from_parquet(cls, path_or_paths: str | list[str], split: str = "train", **kwargs: Any) -> "Dataset":
        from .loading import load_dataset

        return load_dataset("parquet", data_files=path_or_paths, split=split, **kwargs)

    @classmethod
    def from_text(cls, path_or_paths: str | list[str], split: str = "train", **kwargs: Any) -> "Dataset":
        from .loading import load_dataset

        return load_dataset("text", data_files=path_or_paths, split=split, **kwargs)

    def _new(self, table: pa.Table | None = None, indices: np.ndarray | None | str = "keep",
             fingerprint: str | None = None, features: Features | None = None) -> "Dataset":
        """A copy sharing data, with some parts replaced (format and split are kept)."""
        table = self._data if table is None else table
        info = copy.copy(self.info)
        info.features = features if features is not None else (
            self.info.features if table is self._data else None)
        ds = Dataset(table, info=info, split=self._split,
                     indices_table=self._indices if isinstance(indices, str) else indices,
                     fingerprint=fingerprint)
        ds._format_type, ds._format_kwargs = self._format_type, dict(self._format_kwargs)
        ds._output_all_columns, ds._transform = self._output_all_columns, self._transform
        if self._format_columns is not None:
            ds._format_columns = [c for c in self._format_columns if c in ds.column_names]
        ds._cache_files = list(self._cache_files) if table is self._data else []
        return ds

    # ------------------------------------------------------------------ properties
    @property
    def data(self) -> pa.Table:
        """The underlying Arrow table (without the indices mapping)."""
        return self._data

    @property
    def features(self) -> Features:
        return self.info.features  # type: ignore[return-value]

    @property
    def column_names(self) -> list[str]:
        return self._data.column_names

    @property
    def num_rows(self) -> int:
        return len(self._indices) if self._indices is not None else self._data.num_rows

    @property
    def num_columns(self) -> int:
        return self._data.num_columns

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.num_columns)

    @property
    def split(self) -> str | None:
        return self._split

    @property
    def cache_files(self) -> list[dict[str, str]]:
        return [{"filename": f} for f in self._cache_files]

    @property
    def format(self) -> dict[str, Any]:
        return {"type": self._format_type, "format_kwargs": dict(self._format_kwargs),
                "columns": self._format_columns if self._format_columns is not None else self.column_names,
                "output_all_columns": self._output_all_columns}

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return f"Dataset({{\n    features: {self.column_names},\n    num_rows: {self.num_rows}\n}})"

    # ------------------------------------------------------------------ row access
    def _rows(self, start: int, stop: int) -> pa.Table:
        """Visible rows ``start:stop`` as a table (zero-copy when there is no indices mapping)."""
        if self._indices is None:
            return self._data.slice(start, max(0, stop - start))
        return self._data.take(pa.array(self._indices[start:stop]))

    def _take(self, positions: np.ndarray) -> pa.Table:
        idx = positions if self._indices is None else self._indices[positions]
        return self._data.take(pa.array(np.asarray(idx, dtype=np.int64)))

    def _full_table(self) -> pa.Table:
        return self._rows(0, len(self))

    def _format_batch(self, table: pa.Table) -> Any:
        if self._transform is not None:
            batch = format_table(table, None, self._format_columns, self._output_all_columns)
            return self._transform(batch)
        return format_table(table, self._format_type, self._format_columns, self._output_all_columns)

    def _format_one(self, table: pa.Table) -> Any:
        if self._transform is not None:
            out = self._format_batch(table)
            return {k: v[0] for k, v in out.items()}
        return format_row(table, self._format_type, self._format_columns, self._output_all_columns)

    def _normalize_index(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"Index {i} is out of range for a dataset of {n} rows")
        return j

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            j = self._normalize_index(key)
            return self._format_one(self._rows(j, j + 1))
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._format_batch(self._rows(start, max(start, stop)))
            return self._format_batch(self._take(np.arange(start, stop, step)))
        if isinstance(key, str):
            if key not in self.column_names:
                raise KeyError(f"Column {key!r} not in the dataset. Current columns: {self.column_names}")
            if self._transform is not None:
                return self._format_batch(self._full_table())[key]
            table = self._full_table().select([key])
            fmt = self._format_type if self._format_columns is None or key in self._format_columns else None
            return format_column(table, key, fmt)
        if not isinstance(key, (list, tuple, range, np.ndarray)) and hasattr(key, "tolist"):
            key = key.tolist()  # a tensor of positions
            if isinstance(key, int):
                return self[key]
        if isinstance(key, (list, tuple, range, np.ndarray)):
            positions = np.asarray(list(key) if not isinstance(key, np.ndarray) else key)
            if positions.dtype == bool:
                positions = np.nonzero(positions)[0]
            if positions.size and positions.dtype.kind not in "iu":
                raise TypeError(f"Cannot index a Dataset with a list of {positions.dtype}; use ints")
            positions = positions.astype(np.int64)
            positions = np.where(positions < 0, positions + len(self), positions)
            if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
                raise IndexError(f"Index out of range for a dataset of {len(self)} rows")
            return self._format_batch(self._take(positions))
        raise TypeError(f"Cannot index a Dataset with {type(key).__name__}: use an int, slice, column name or list of ints")

    def __getitems__(self, keys: list[int]) -> list[Any]:
        """Rows for a list of indices (used by torch's DataLoader for whole batches)."""
        batch = self[list(keys)]
        if not isinstance(batch, Mapping):
            return [self[k] for k in keys]
        return [{k: v[i] for k, v in batch.items()} for i in range(len(keys))]

    def __iter__(self) -> Iterator[Any]:
        chunk = 1000
        for start in range(0, len(self), chunk):
            table = self._rows(start, min(start + chunk, len(self)))
            if self._format_type is None and self._transform is None:
                cols = self._format_columns
                yield from (table if cols is None else table.select(cols)).to_pylist()
            elif self._format_type in ("arrow", "pandas"):
                for i in range(table.num_rows):
                    yield self._format_one(table.slice(i, 1))
            else:
                batch = self._format_batch(table)
                for i in range(table.num_rows):
                    yield {k: v[i] for k, v in batch.items()}

    def iter(self, batch_size: int, drop_last_batch: bool = False) -> Iterator[Any]:
        """Iterate over formatted batches of ``batch_size`` rows."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            if drop_last_batch and stop - start < batch_size:
                return
            yield self._format_batch(self._rows(start, stop))

    # ------------------------------------------------------------------ formats
    def set_format(self, type: str | None = None, columns: list[str] | str | None = None,
                   output_all_columns: bool = False, **format_kwargs: Any) -> None:
        """Set the output format of ``__getitem__`` / iteration in place."""
        self._format_type = canonical_format(type)
        self._format_columns = None if columns is None else _check_columns(columns, self.column_names, "set_format(columns=...)")
        self._output_all_columns = output_all_columns
        self._format_kwargs = format_kwargs
        self._transform = None

    def reset_format(self) -> None:
        self.set_format()

    def with_format(self, type: str | None = None, columns: list[str] | str | None = None,
                    output_all_columns: bool = False, **format_kwargs: Any) -> "Dataset":
        """A copy with the given output format (the data is shared)."""
        ds = self._new()
        ds.set_format(type, columns, output_all_columns, **format_kwargs)
        return ds

    def set_transform(self, transform: Callable | None, columns: list[str] | None = None,
                      output_all_columns: bool = False) -> None:
        """Apply ``transform(batch_dict)`` on the fly when rows are read."""
        self.set_format(None, columns, output_all_columns)
        self._transform = transform

    def with_transform(self, transform: Callable | None, columns: list[str] | None = None,
                       output_all_columns: bool = False) -> "Dataset":
        ds = self._new()
        ds.set_transform(transform, columns, output_all_columns)
        return ds

    # ------------------------------------------------------------------ transforms
    def map(self, function: Callable | None = None, with_indices: bool = False, with_rank: bool = False,
            input_columns: str | list[str] | None = None, batched: bool = False, batch_size: int | None = 1000,
            drop_last_batch: bool = False, remove_columns: str | list[str] | None = None,
            keep_in_memory: bool = False, load_from_cache_file: bool | None = None,
            cache_file_name: str | None = None, writer_batch_size: int | None = 1000,
            features: Features | None = None, disable_nullable: bool = False,
            fn_kwargs: dict[str, Any] | None = None, num_proc: int | None = None,
            new_fingerprint: str | None = None, desc: str | None = None, **kwargs: Any) -> "Dataset":
        """Apply ``function`` to every row (or batch), streaming results to a cached Arrow file.

        The result is cached under a fingerprint of this dataset, the function and the
        arguments; running the same map again loads that file instead of calling the function.
        The function's part covers its code, defaults, closure cells, the globals it names and
        the attributes it names on modules and classes it reads (``settings.OFFSET``), by value.
        It does not cover what the function reaches only at run time (files, environment
        variables, random state, state behind an object's methods): pass
        ``load_from_cache_file=False`` to recompute, e.g.
        ``ds.map(add_offset, load_from_cache_file=False)``. See ``openformers.data.fingerprint``.
        """
        from .mapping import run_map

        return run_map(self, function, with_indices=with_indices, with_rank=with_rank, input_columns=input_columns,
                       batched=batched, batch_size=batch_size, drop_last_batch=drop_last_batch,
                       remove_columns=remove_columns, keep_in_memory=keep_in_memory,
                       load_from_cache_file=load_from_cache_file, cache_file_name=cache_file_name,
                       writer_batch_size=writer_batch_size, features=features, fn_kwargs=fn_kwargs,
                       num_proc=num_proc, new_fingerprint=new_fingerprint, desc=desc)

    def filter(self, function: Callable | None = None, with_indices: bool = False, with_rank: bool = False,
               input_columns: str | list[str] | None = None, batched: bool = False, batch_size: int | None = 1000,
               keep_in_memory: bool = False, load_from_cache_file: bool | None = None,
               cache_file_name: str | None = None, writer_batch_size: int | None = 1000,
               fn_kwargs: dict[str, Any] | None = None, num_proc: int | None = None,
               new_fingerprint: str | None = None, desc: str | None = None, **kwargs: Any) -> "Dataset":
        """Keep the rows for which ``function`` returns True (cached like :meth:`map`)."""
        from .mapping import run_filter

        return run_filter(self, function, with_indices=with_indices, input_columns=input_columns, batched=batched,
                          batch_size=batch_size, keep_in_memory=keep_in_memory,
                          load_from_cache_file=load_from_cache_file, cache_file_name=cache_file_name,
                          fn_kwargs=fn_kwargs, num_proc=num_proc, new_fingerprint=new_fingerprint)

    # ------------------------------------------------------------------ export
    def to_pandas(self, batch_size: int | None = None, batched: bool = False) -> Any:
        if batched:
            bs = batch_size or 1000
            return (self._rows(s, min(s + bs, len(self))).to_pandas() for s in range(0, len(self), bs))
        return self._full_table().to_pandas()

    def to_dict(self, batch_size: int | None = None, batched: bool = False) -> Any:
        if batched:
            bs = batch_size or 1000
            return (self._rows(s, min(s + bs, len(self))).to_pydict() for s in range(0, len(self), bs))
        return self._full_table().to_pydict()

    def to_list(self) -> list[dict[str, Any]]:
        return self._full_table().to_pylist()

    def to_arrow(self) -> pa.Table:
        return self._full_table()

    def to_csv(self, path_or_buf: Any, batch_size: int | None = None, num_proc: int | None = None,
               **to_csv_kwargs: Any) -> int:
        from .export import write_csv

        return write_csv(self, path_or_buf, batch_size or 10_000, **to_csv_kwargs)

    def to_json(self, path_or_buf: Any, batch_size: int | None = None, num_proc: int | None = None,
                **to_json_kwargs: Any) -> int:
        from .export import write_json

        return write_json(self, path_or_buf, batch_size or 10_000, **to_json_kwargs)

    def to_parquet(self, path_or_buf: Any, batch_size: int | None = None, **parquet_writer_kwargs: Any) -> int:
        from .export import write_parquet

        return write_parquet(self, path_or_buf, batch_size or 10_000, **parquet_writer_kwargs)

    def save_to_disk(self, dataset_path: str | os.PathLike, max_shard_size: int | str | None = None,
                     num_shards: int | None = None, num_proc: int | None = None, **kwargs: Any) -> None:
        """Save as Arrow shards + ``dataset_info.json`` + ``state.json`` (the HF layout), atomically."""
        from .disk import save_dataset

        save_dataset(self, dataset_path, num_shards=num_shards, max_shard_size=max_shard_size)

    @staticmethod
    def load_from_disk(dataset_path: str | os.PathLike, keep_in_memory: bool | None = None, **kwargs: Any) -> "Dataset":
        from .disk import load_from_disk

        ds = load_from_disk(dataset_path, keep_in_memory=keep_in_memory)
        if not isinstance(ds, Dataset):
            raise ValueError(f"{dataset_path} holds a DatasetDict; use DatasetDict.load_from_disk or load_from_disk")
        return ds

    # pickling keeps the (possibly memory-mapped) data; formats and mapping travel along
    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _write_rows(writer: ArrowWriter, rows: list[dict[str, Any]], feats: Features | None) -> Features:
    cols = rows_to_columns(rows)
    if feats is not None:
        for k in feats:
            cols.setdefault(k, [None] * len(rows))
        cols = {k: cols[k] for k in feats} | {k: v for k, v in cols.items() if k not in feats}
    table, new_feats = table_from_columns(cols, feats)
    writer.write(table)
    return feats if feats is not None else new_feats


def _to_iterable_dataset(self: Dataset, num_shards: int = 1) -> Any:
    """Stream this dataset's rows as an :class:`IterableDataset` (``num_shards`` shards)."""
    from .iterable import IterableDataset

    def rows(epoch: int) -> Iterator[dict[str, Any]]:
        for start in range(0, len(self), 1000):
            yield from self._rows(start, min(start + 1000, len(self))).to_pylist()

    return IterableDataset(rows, features=self.features, split=self.split, n_shards=num_shards)


Dataset.to_iterable_dataset = _to_iterable_dataset  # type: ignore[attr-defined]
