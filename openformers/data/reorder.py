"""Row reordering of ``Dataset`` (select, shuffle, sort, train_test_split, shard): a mixin.

Each keeps an indices mapping over the same underlying table; ``flatten_indices`` materialises it.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrow_writer import ArrowWriter, cache_root, read_arrow_file
from .columns import _check_columns
from .fingerprint import update_fingerprint
from .splits import split_sizes, stratified_split

if TYPE_CHECKING:  # pragma: no cover
    from .arrow_dataset import Dataset
    from .dataset_dict import DatasetDict


class ReorderMixin:
    """Row reordering mixed into :class:`~openformers.data.arrow_dataset.Dataset`."""

    def select(self, indices: Iterable[int], keep_in_memory: bool = False, indices_cache_file_name: str | None = None,
               writer_batch_size: int | None = 1000, new_fingerprint: str | None = None) -> "Dataset":
        """Rows at ``indices`` (in that order), as an indices mapping over the same data."""
        if isinstance(indices, range) and indices.step == 1 and self._indices is None and \
                (len(indices) == 0 or (0 <= indices.start and indices.stop <= len(self))):
            fp = new_fingerprint or update_fingerprint(self._fingerprint, "select", indices.start, indices.stop)
            table = self._data.slice(indices.start, len(indices))
            ds = self._new(table, indices=None, fingerprint=fp, features=self.features)
            ds._cache_files = list(self._cache_files)
            return ds
        pos = np.asarray(indices if not isinstance(indices, range) else np.arange(indices.start, indices.stop, indices.step))
        if pos.size == 0:
            pos = pos.astype(np.int64)
        if pos.dtype.kind not in "iu":
            raise TypeError(f"select(indices=...) expects integers, got {pos.dtype}")
        if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
            raise IndexError(f"select: index out of range for a dataset of {len(self)} rows "
                             f"(got min {pos.min()}, max {pos.max()})")
        new_indices = pos.astype(np.int64) if self._indices is None else self._indices[pos]
        fp = new_fingerprint or update_fingerprint(self._fingerprint, "select", pos)
        return self._new(indices=new_indices, fingerprint=fp)

    def shuffle(self, seed: int | None = None, generator: np.random.Generator | None = None,
                keep_in_memory: bool = False, load_from_cache_file: bool | None = None,
                indices_cache_file_name: str | None = None, writer_batch_size: int | None = 1000,
                new_fingerprint: str | None = None) -> "Dataset":
        """Rows in a random order; deterministic for a given ``seed``."""
        if generator is None:
            generator = np.random.default_rng(seed)
        perm = generator.permutation(len(self))
        return self.select(perm, new_fingerprint=new_fingerprint)

    def sort(self, column_names: str | list[str], reverse: bool | list[bool] = False,
             null_placement: str = "at_end", keep_in_memory: bool = False, load_from_cache_file: bool | None = None,
             indices_cache_file_name: str | None = None, writer_batch_size: int | None = 1000,
             new_fingerprint: str | None = None) -> "Dataset":
        """Rows sorted (stably) by one or more columns."""
        cols = _check_columns(column_names, self.column_names, "sort(column_names=...)")
        revs = [reverse] * len(cols) if isinstance(reverse, bool) else list(reverse)
        if len(revs) != len(cols):
            raise ValueError("sort: `reverse` must be a bool or a list with one bool per column")
        if null_placement in ("last", "first"):
            null_placement = "at_" + ("end" if null_placement == "last" else "start")
        keys = self._full_table().select(cols)
        try:  # newer pyarrow takes the null placement per sort key
            order = pc.sort_indices(keys, sort_keys=[(c, "descending" if r else "ascending", null_placement)
                                                     for c, r in zip(cols, revs)])
        except (TypeError, ValueError, pa.ArrowInvalid):
            order = pc.sort_indices(keys, sort_keys=[(c, "descending" if r else "ascending") for c, r in zip(cols, revs)],
                                    null_placement=null_placement)
        return self.select(order.to_numpy(), new_fingerprint=new_fingerprint)

    def train_test_split(self, test_size: float | int | None = None, train_size: float | int | None = None,
                         shuffle: bool = True, stratify_by_column: str | None = None, seed: int | None = None,
                         generator: np.random.Generator | None = None, **kwargs: Any) -> "DatasetDict":
        """Split into ``{"train", "test"}`` (test_size defaults to 0.25)."""
        from .dataset_dict import DatasetDict

        n = len(self)
        n_test, n_train = split_sizes(n, test_size, train_size)
        if stratify_by_column is not None:
            _check_columns(stratify_by_column, self.column_names, "train_test_split(stratify_by_column=...)")
            labels = np.asarray(self._full_table().column(stratify_by_column).to_pylist())
            rng = generator or np.random.default_rng(seed)
            train_idx, test_idx = stratified_split(labels, n_train, n_test, rng)
        elif shuffle:
            rng = generator or np.random.default_rng(seed)
            perm = rng.permutation(n)
            test_idx, train_idx = perm[:n_test], perm[n_test:n_test + n_train]
        else:
            train_idx, test_idx = np.arange(n_train), np.arange(n_train, n_train + n_test)
        return DatasetDict({"train": self.select(train_idx), "test": self.select(test_idx)})

    def shard(self, num_shards: int, index: int, contiguous: bool = True, keep_in_memory: bool = False,
              indices_cache_file_name: str | None = None, writer_batch_size: int | None = 1000) -> "Dataset":
        """The ``index``-th of ``num_shards`` parts (contiguous blocks, or every num_shards-th row)."""
        if not 0 <= index < num_shards:
            raise ValueError(f"shard: index must be in [0, num_shards) = [0, {num_shards}), got {index}")
        n = len(self)
        if contiguous:
            div, mod = divmod(n, num_shards)
            start = div * index + min(index, mod)
            end = start + div + (1 if index < mod else 0)
            return self.select(range(start, end))
        return self.select(np.arange(index, n, num_shards))

    def skip(self, n: int) -> "Dataset":
        return self.select(range(min(n, len(self)), len(self)))

    def take(self, n: int) -> "Dataset":
        return self.select(range(min(n, len(self))))

    def flatten_indices(self, keep_in_memory: bool = False, cache_file_name: str | None = None,
                        writer_batch_size: int | None = 1000, new_fingerprint: str | None = None) -> "Dataset":
        """Materialise the indices mapping into a new contiguous (cached) table."""
        if self._indices is None:
            return self
        fp = new_fingerprint or update_fingerprint(self._fingerprint, "flatten_indices")
        path = None if keep_in_memory else (cache_file_name or os.path.join(cache_root(), "cache", f"cache-{fp}.arrow"))
        written = None
        if path is not None and os.path.exists(path):
            table, written = read_arrow_file(path), path
        else:
            writer = ArrowWriter(path, self._data.schema)
            try:
                for s in range(0, len(self), writer_batch_size or 1000):
                    writer.write(self._rows(s, min(s + (writer_batch_size or 1000), len(self))))
                table = writer.finalize()
                written = writer.written_path
            except BaseException:
                writer.abort()
                raise
        ds = self._new(table, indices=None, fingerprint=fp, features=self.features)
        ds._cache_files = [str(written)] if written is not None else []
        return ds
