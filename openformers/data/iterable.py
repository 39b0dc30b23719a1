"""``IterableDataset``: lazily read rows (``load_dataset(..., streaming=True)``).

Nothing is read until iteration; files are parsed block by block, so a file larger than memory
streams through in bounded memory. Transforms (map, filter, shuffle, take, skip, batch) compose
lazily and run while iterating.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .features import Features, encode_value
from .formatting import _to_torch, canonical_format

RowSource = Callable[[int], Iterator[dict[str, Any]]]  # epoch -> rows


def _to_list(x: str | list[str] | None) -> list[str]:
    return [x] if isinstance(x, str) else list(x or [])


class IterableDataset:
    """A stream of row dicts with lazy transforms (the streaming counterpart of ``Dataset``)."""

    def __init__(self, source: RowSource, features: Features | None = None, split: str | None = None,
                 n_shards: int = 1, column_names: list[str] | None = None) -> None:
        self._source = source
        self._features = features
        self._split = split
        self._epoch = 0
        self._format_type: str | None = None
        self.n_shards = n_shards
        self._column_names = column_names

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_generator(cls, generator: Callable[..., Iterator[dict[str, Any]]], features: Features | None = None,
                       gen_kwargs: dict[str, Any] | None = None, split: str | None = None) -> "IterableDataset":
        """Rows from ``generator(**gen_kwargs)``, called afresh for every pass."""
        kwargs = gen_kwargs or {}
        return cls(lambda epoch: iter(generator(**kwargs)), features=Features(features) if features else None,
                   split=split)

    @classmethod
    def from_files(cls, builder: str, files: list[str], features: Features | None = None, split: str | None = None,
                   **reader_kwargs: Any) -> "IterableDataset":
        """Rows read block by block from csv/json/text/parquet/arrow files."""
        from .loading import _apply_features
        from .readers import READERS

        reader = READERS[builder]

        def rows(epoch: int) -> Iterator[dict[str, Any]]:
            for path in files:
                for table in reader(path, features=features, **reader_kwargs):
                    yield from _apply_features(table, features).to_pylist()

        return cls(rows, features=features, split=split, n_shards=len(files))

    def _derive(self, source: RowSource, features: Features | None | str = "keep",
                column_names: list[str] | None | str = "keep") -> "IterableDataset":
        ds = IterableDataset(source, features=self._features if isinstance(features, str) else features,
                             split=self._split, n_shards=self.n_shards,
                             column_names=self._column_names if isinstance(column_names, str) else column_names)
        ds._epoch, ds._format_type = self._epoch, self._format_type
        return ds

    # ------------------------------------------------------------------ properties
    @property
    def features(self) -> Features | None:
        return self._features

    @property
    def split(self) -> str | None:
        return self._split

    @property
    def column_names(self) -> list[str] | None:
        """Column names (reads the first row if the features are unknown)."""
        if self._features is not None:
            return list(self._features)
        if self._column_names is None:
            first = next(iter(self._source(self._epoch)), None)
            self._column_names = list(first) if first is not None else []
        return self._column_names

    def __repr__(self) -> str:
        feats = list(self._features) if self._features is not None else "Unknown"
        return f"IterableDataset({{\n    features: {feats},\n    num_shards: {self.n_shards}\n}})"

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling seed per epoch (``seed + epoch``)."""
        self._epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        rows = self._source(self._epoch)
        if self._format_type == "torch":
            return (_to_torch(r) for r in rows)
        if self._format_type == "numpy":
            return ({k: np.asarray(v) for k, v in r.items()} for r in rows)
        return rows

    def iter(self, batch_size: int, drop_last_batch: bool = False) -> Iterator[dict[str, list[Any]]]:
        return iter(self.batch(batch_size, drop_last_batch))

    def with_format(self, type: str | None = None) -> "IterableDataset":
        ds = self._derive(self._source)
        ds._format_type = canonical_format(type)
        if ds._format_type not in (None, "torch", "numpy"):
            raise ValueError(f"IterableDataset supports the formats None, 'numpy' and 'torch', got {type!r}")
        return ds

    # ------------------------------------------------------------------ transforms
    def map(self, function: Callable | None = None, with_indices: bool = False, input_columns: str | list[str] | None = None,
            batched: bool = False, batch_size: int | None = 1000, drop_last_batch: bool = False,
            remove_columns: str | list[str] | None = None, features: Features | None = None,
            fn_kwargs: dict[str, Any] | None = None) -> "IterableDataset":
        """Apply ``function`` lazily to each row or batch (same contract as ``Dataset.map``)."""
        if function is None:
            return self
        remove, input_cols, kwargs = _to_list(remove_columns), input_columns, dict(fn_kwargs or {})
        input_cols = [input_cols] if isinstance(input_cols, str) else input_cols
        size = batch_size if batch_size and batch_size > 0 else None
        parent = self._source

        def merge(inp: dict[str, Any], out: Any) -> dict[str, Any]:
            if out is None:
                out = {}
            if not isinstance(out, Mapping):
                raise TypeError(f"A map function must return a dict (a Mapping) or None, got {type(out).__name__}")
            res = {k: v for k, v in inp.items() if k not in remove}
            res.update(out)
            return res

        def source(epoch: int) -> Iterator[dict[str, Any]]:
            rows = parent(epoch)
            if not batched:
                for i, row in enumerate(rows):
                    args = [row[c] for c in input_cols] if input_cols else [row]
                    yield merge(row, function(*args, *([i] if with_indices else []), **kwargs))
                return
            start = 0
            while True:
                chunk = list(itertools.islice(rows, size)) if size else list(rows)
                if not chunk or (drop_last_batch and size and len(chunk) < size):
                    return
                batch = {k: [r.get(k) for r in chunk] for k in chunk[0]}
                args = [batch[c] for c in input_cols] if input_cols else [batch]
                idx = [list(range(start, start + len(chunk)))] if with_indices else []
                out = function(*args, *idx, **kwargs)
                out = {} if out is None else out
                if not isinstance(out, Mapping):
                    raise TypeError(f"A batched map function must return a dict (a Mapping), got {type(out).__name__}")
                lengths = {k: len(v) for k, v in out.items()}
                if len(set(lengths.values())) > 1:
                    raise ValueError(f"The map function returned columns of different lengths in one batch: {lengths}")
                n_out = next(iter(lengths.values()), len(chunk))
                kept = [k for k in batch if k not in remove and k not in out]
                if kept and n_out != len(chunk):
                    raise ValueError(f"The map function returned {n_out} rows for a batch of {len(chunk)}; "
                                     f"pass remove_columns={kept} to drop the input columns")
                merged = {k: batch[k] for k in batch if k not in remove}
                merged.update({k: list(v) for k, v in out.items()})
                for i in range(n_out):
                    yield {k: v[i] for k, v in merged.items()}
                start += len(chunk)
                if not size:
                    return

        return self._derive(source, features=Features(features) if features is not None else None,
                            column_names=None)

    def filter(self, function: Callable | None = None, with_indices: bool = False,
               input_columns: str | list[str] | None = None, batched: bool = False, batch_size: int | None = 1000,
               fn_kwargs: dict[str, Any] | None = None) -> "IterableDataset":
        """Keep rows for which ``function`` is true, lazily."""
        if function is None:
            return self
        input_cols = [input_columns] if isinstance(input_columns, str) else input_columns
        kwargs, parent = dict(fn_kwargs or {}), self._source

        def source(epoch: int) -> Iterator[dict[str, Any]]:
            rows = parent(epoch)
            if not batched:
                for i, row in enumerate(rows):
                    args = [row[c] for c in input_cols] if input_cols else [row]
                    if function(*args, *([i] if with_indices else []), **kwargs):
                        yield row
                return
            start = 0
            while True:
                chunk = list(itertools.islice(rows, batch_size or None))
                if not chunk:
                    return
                batch = {k: [r.get(k) for r in chunk] for k in chunk[0]}
                args = [batch[c] for c in input_cols] if input_cols else [batch]
                mask = function(*args, *([list(range(start, start + len(chunk)))] if with_indices else []), **kwargs)
                mask = list(mask)
                if len(mask) != len(chunk):
                    raise ValueError(f"A batched filter function must return one bool per row, got {len(mask)} "
                                     f"for {len(chunk)} rows")
                yield from (r for r, keep in zip(chunk, mask) if keep)
                start += len(chunk)

        return self._derive(source)

    def shuffle(self, seed: int | None = None, generator: np.random.Generator | None = None,
                buffer_size: int = 1000) -> "IterableDataset":
        """Approximate shuffle with a buffer of ``buffer_size`` rows; seed + epoch fixes the order."""
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        base_seed = seed if seed is not None else (int(generator.integers(2**31)) if generator is not None
                                                   else int(np.random.default_rng().integers(2**31)))
        parent = self._source

        def source(epoch: int) -> Iterator[dict[str, Any]]:
            rng = np.random.default_rng(base_seed + epoch)
            buf: list[dict[str, Any]] = []
            for row in parent(epoch):
                if len(buf) < buffer_size:
                    buf.append(row)
                    continue
                j = int(rng.integers(buffer_size))
                yield buf[j]
                buf[j] = row
            order = rng.permutation(len(buf))
            for j in order:
                yield buf[j]

        return self._derive(source)

    def take(self, n: int) -> "IterableDataset":
        parent = self._source
        return self._derive(lambda epoch: itertools.islice(parent(epoch), n))

    def skip(self, n: int) -> "IterableDataset":
        parent = self._source
        return self._derive(lambda epoch: itertools.islice(parent(epoch), n, None))

    def batch(self, batch_size: int, drop_last_batch: bool = False) -> "IterableDataset":
        """Rows become batches: each item is a dict of lists of ``batch_size`` values."""
        parent = self._source

        def source(epoch: int) -> Iterator[dict[str, Any]]:
            rows = parent(epoch)
            while True:
                chunk = list(itertools.islice(rows, batch_size))
                if not chunk or (drop_last_batch and len(chunk) < batch_size):
                    return
                yield {k: [r.get(k) for r in chunk] for k in chunk[0]}

        return self._derive(source, features=None)

    def remove_columns(self, column_names: str | list[str]) -> "IterableDataset":
        cols = set(_to_list(column_names))
        parent = self._source
        feats = Features({k: v for k, v in self._features.items() if k not in cols}) if self._features else None
        return self._derive(lambda e: ({k: v for k, v in r.items() if k not in cols} for r in parent(e)), features=feats,
                            column_names=None)

    def select_columns(self, column_names: str | list[str]) -> "IterableDataset":
        cols = _to_list(column_names)
        parent = self._source
        feats = Features({k: self._features[k] for k in cols}) if self._features else None

        def source(epoch: int) -> Iterator[dict[str, Any]]:
            for r in parent(epoch):
                missing = [c for c in cols if c not in r]
                if missing:
                    raise ValueError(f"select_columns: column(s) {missing} not in the data (columns: {list(r)})")
                yield {c: r[c] for c in cols}

        return self._derive(source, features=feats, column_names=None)

    def rename_column(self, original_column_name: str, new_column_name: str) -> "IterableDataset":
        return self.rename_columns({original_column_name: new_column_name})

    def rename_columns(self, column_mapping: dict[str, str]) -> "IterableDataset":
        parent = self._source
        feats = Features({column_mapping.get(k, k): v for k, v in self._features.items()}) if self._features else None
        return self._derive(lambda e: ({column_mapping.get(k, k): v for k, v in r.items()} for r in parent(e)),
                            features=feats, column_names=None)

    def cast_column(self, column: str, feature: Any) -> "IterableDataset":
        """Encode values for ``feature`` while streaming (e.g. label names -> ClassLabel ids)."""
        parent = self._source
        feats = Features(self._features or {})
        feats[column] = feature

        def source(epoch: int) -> Iterator[dict[str, Any]]:
            for r in parent(epoch):
                r = dict(r)
                r[column] = encode_value(feature, r[column])
                yield r

        return self._derive(source, features=feats if self._features else None)


class IterableDatasetDict(dict):
    """Named splits of IterableDatasets; transforms apply to every split."""

    def _apply(self, method: str, *args: Any, **kwargs: Any) -> "IterableDatasetDict":
        return IterableDatasetDict({k: getattr(v, method)(*args, **kwargs) for k, v in self.items()})

    def map(self, *args: Any, **kwargs: Any) -> "IterableDatasetDict":
        return self._apply("map", *args, **kwargs)

    def filter(self, *args: Any, **kwargs: Any) -> "IterableDatasetDict":
        return self._apply("filter", *args, **kwargs)

    def shuffle(self, *args: Any, **kwargs: Any) -> "IterableDatasetDict":
        return self._apply("shuffle", *args, **kwargs)

    def remove_columns(self, *args: Any, **kwargs: Any) -> "IterableDatasetDict":
        return self._apply("remove_columns", *args, **kwargs)

    def rename_column(self, *args: Any, **kwargs: Any) -> "IterableDatasetDict":
        return self._apply("rename_column", *args, **kwargs)

    def select_columns(self, *args: Any, **kwargs: Any) -> "IterableDatasetDict":
        return self._apply("select_columns", *args, **kwargs)

    def with_format(self, *args: Any, **kwargs: Any) -> "IterableDatasetDict":
        return self._apply("with_format", *args, **kwargs)


def concatenate_iterable(dsets: list[IterableDataset], axis: int = 0) -> IterableDataset:
    if axis == 0:
        return IterableDataset(lambda e: itertools.chain.from_iterable(d._source(e) for d in dsets),
                               features=dsets[0].features, n_shards=sum(d.n_shards for d in dsets))
    if axis == 1:
        def source(epoch: int) -> Iterator[dict[str, Any]]:
            for rows in zip(*(d._source(epoch) for d in dsets)):
                merged: dict[str, Any] = {}
                for r in rows:
                    merged.update(r)
                yield merged
        return IterableDataset(source)
    raise ValueError(f"concatenate_datasets: axis must be 0 or 1, got {axis}")


def interleave_iterable(dsets: list[IterableDataset], probabilities: list[float] | None, seed: int | None,
                        stopping_strategy: str) -> IterableDataset:
    if stopping_strategy not in ("first_exhausted", "all_exhausted"):
        raise ValueError(f"stopping_strategy must be 'first_exhausted' or 'all_exhausted', got {stopping_strategy!r}")
    n = len(dsets)
    if probabilities is not None and (len(probabilities) != n or not np.isclose(sum(probabilities), 1.0)):
        raise ValueError(f"probabilities must be {n} numbers summing to 1, got {probabilities}")

    def source(epoch: int) -> Iterator[dict[str, Any]]:
        iters = [d._source(epoch) for d in dsets]
        exhausted = [False] * n
        rng = np.random.default_rng(None if seed is None else seed + epoch)
        step = 0
        while True:
            i = step % n if probabilities is None else int(rng.choice(n, p=probabilities))
            step += 1
            try:
                row = next(iters[i])
            except StopIteration:
                exhausted[i] = True
                if stopping_strategy == "first_exhausted" or all(exhausted):
                    return
                iters[i] = dsets[i]._source(epoch)
                try:
                    row = next(iters[i])
                except StopIteration:
                    return
            yield row

    return IterableDataset(source, features=dsets[0].features, n_shards=max(d.n_shards for d in dsets))
