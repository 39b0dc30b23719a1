"""``concatenate_datasets`` and ``interleave_datasets`` for map-style and iterable datasets."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .arrow_dataset import Dataset, DatasetInfo
from .conversion import attach_features
from .features import Features, feature_to_arrow
from .fingerprint import update_fingerprint


def _visible_table(ds: Dataset) -> pa.Table:
    return ds._data if ds._indices is None else ds.flatten_indices()._data


def concatenate_datasets(dsets: list[Any], info: DatasetInfo | None = None, split: str | None = None,
                         axis: int = 0) -> Any:
    """Rows of all datasets one after the other (``axis=0``) or their columns side by side (``axis=1``)."""
    if not dsets:
        raise ValueError("concatenate_datasets needs at least one dataset")
    from .iterable import IterableDataset, concatenate_iterable

    if all(isinstance(d, IterableDataset) for d in dsets):
        return concatenate_iterable(dsets, axis=axis)
    if not all(isinstance(d, Dataset) for d in dsets):
        raise TypeError("concatenate_datasets expects only Dataset objects or only IterableDataset objects")
    if axis == 0:
        first = dsets[0]
        for i, d in enumerate(dsets[1:], 1):
            if sorted(d.column_names) != sorted(first.column_names):
                raise ValueError(f"concatenate_datasets: dataset {i} has columns {d.column_names}, "
                                 f"dataset 0 has {first.column_names}; they must be the same")
            for c in first.column_names:
                if feature_to_arrow(d.features[c]) != feature_to_arrow(first.features[c]) or \
                        d.features[c] != first.features[c]:
                    raise ValueError(f"concatenate_datasets: column {c!r} is {d.features[c]!r} in dataset {i} "
                                     f"but {first.features[c]!r} in dataset 0; cast them to one feature first")
        tables = [_visible_table(d).select(first.column_names).replace_schema_metadata(None) for d in dsets]
        table = pa.concat_tables(tables)
        feats = first.features
    elif axis == 1:
        n = len(dsets[0])
        if any(len(d) != n for d in dsets):
            raise ValueError(f"concatenate_datasets(axis=1) needs the same number of rows: {[len(d) for d in dsets]}")
        names: list[str] = [c for d in dsets for c in d.column_names]
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise ValueError(f"concatenate_datasets(axis=1): column(s) {dup} appear in more than one dataset")
        arrays, feats = [], Features()
        for d in dsets:
            t = _visible_table(d)
            for c in d.column_names:
                arrays.append(t.column(c).combine_chunks())
                feats[c] = d.features[c]
        table = pa.Table.from_arrays(arrays, names=names)
    else:
        raise ValueError(f"concatenate_datasets: axis must be 0 or 1, got {axis}")
    out_info = DatasetInfo(features=feats) if info is None else info
    out_info.features = feats
    fp = update_fingerprint("concatenate", [d._fingerprint for d in dsets], axis)
    out = Dataset(attach_features(table, feats), info=out_info, split=split or dsets[0].split, fingerprint=fp)
    out._format_type, out._format_kwargs = dsets[0]._format_type, dict(dsets[0]._format_kwargs)
    return out


def interleave_indices(lengths: list[int], probabilities: list[float] | None, seed: int | None,
                       stopping_strategy: str) -> np.ndarray:
    """Positions into the concatenation of datasets with ``lengths`` that interleave them."""
    if stopping_strategy not in ("first_exhausted", "all_exhausted"):
        raise ValueError(f"stopping_strategy must be 'first_exhausted' or 'all_exhausted', got {stopping_strategy!r}")
    offsets = np.cumsum([0] + lengths[:-1])
    n = len(lengths)
    if probabilities is None:
        if min(lengths) == 0:
            return np.zeros(0, dtype=np.int64)
        steps = min(lengths) if stopping_strategy == "first_exhausted" else max(lengths)
        pos = np.mod(np.arange(steps).reshape(-1, 1), np.array(lengths).reshape(1, -1))
        return (pos + offsets).reshape(-1).astype(np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != (n,) or (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"probabilities must be {n} non-negative numbers summing to 1, got {probabilities}")
    if any(lengths[i] == 0 and p[i] > 0 for i in range(n)):
        raise ValueError("interleave_datasets: a dataset sampled with probability > 0 is empty")
    if stopping_strategy == "all_exhausted" and (p == 0).any():
        raise ValueError("stopping_strategy='all_exhausted' cannot exhaust a dataset with probability 0")
    rng = np.random.default_rng(seed)
    current = np.zeros(n, dtype=np.int64)
    exhausted = np.zeros(n, dtype=bool)
    drawable = p > 0
    out: list[int] = []
    while True:
        for src in rng.choice(n, size=1000, p=p):
            out.append(int(current[src] + offsets[src]))
            current[src] += 1
            if current[src] >= lengths[src]:
                exhausted[src] = True
                current[src] = 0
                done = exhausted[drawable].all() if stopping_strategy == "all_exhausted" else True
                if done:
                    return np.asarray(out, dtype=np.int64)


def interleave_datasets(datasets: list[Any], probabilities: list[float] | None = None, seed: int | None = None,
                        info: DatasetInfo | None = None, split: str | None = None,
                        stopping_strategy: str = "first_exhausted") -> Any:
    """Alternate rows from several datasets (round robin, or sampled with ``probabilities``).

    ``first_exhausted`` stops when one dataset runs out; ``all_exhausted`` restarts exhausted
    datasets until every one has been seen entirely.
    """
    if not datasets:
        raise ValueError("interleave_datasets needs at least one dataset")
    from .iterable import IterableDataset, interleave_iterable

    if all(isinstance(d, IterableDataset) for d in datasets):
        return interleave_iterable(datasets, probabilities, seed, stopping_strategy)
    if not all(isinstance(d, Dataset) for d in datasets):
        raise TypeError("interleave_datasets expects only Dataset objects or only IterableDataset objects")
    idx = interleave_indices([len(d) for d in datasets], probabilities, seed, stopping_strategy)
    return concatenate_datasets(datasets, info=info, split=split).select(idx)
