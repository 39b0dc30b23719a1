"""The engines behind ``Dataset.map`` and ``Dataset.filter``.

``map`` reads the input in batches, calls the function, converts its output to an Arrow record
batch and appends it to a stream file in the cache (so memory stays bounded by one batch), then
memory-maps the finished file. With ``num_proc`` the rows are cut into contiguous shards, each
processed by a forked worker into its own file; the shards are concatenated without copying.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .arrow_writer import ArrowWriter, cache_root, read_arrow_file, read_cached_arrow, remove_orphaned_temporaries
from .conversion import attach_features, rows_to_columns, to_arrow_array
from .features import Features, feature_from_arrow, feature_to_arrow
from .fingerprint import update_fingerprint
from .formatting import format_table
from openformers.utils import progress

if TYPE_CHECKING:  # pragma: no cover
    from .arrow_dataset import Dataset

_JOBS: dict[int, Callable[[int], Any]] = {}  # shard jobs, inherited by forked workers


def _run_job(key: int, shard: int) -> Any:
    return _JOBS[key](shard)


def _cache_path(fp: str, cache_file_name: str | None, keep_in_memory: bool) -> str | None:
    if keep_in_memory:
        return None
    return cache_file_name or os.path.join(cache_root(), "cache", f"cache-{fp}.arrow")


def _shard_path(path: str, i: int, n: int) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}_{i:05d}_of_{n:05d}{ext}"


def _run_shards(n_rows: int, num_proc: int | None, work: Callable[[int, int, int, int], Any]) -> list[Any]:
    """Run ``work(shard, n_shards, start, stop)`` over contiguous shards, in forked workers if asked."""
    n = max(1, min(num_proc or 1, n_rows))
    bounds = [(i * n_rows // n, (i + 1) * n_rows // n) for i in range(n)]
    if n == 1:
        return [work(0, 1, 0, n_rows)]
    key = id(work)
    _JOBS[key] = lambda i: work(i, n, *bounds[i])
    try:
        with ProcessPoolExecutor(n, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(_run_job, [key] * n, range(n)))
    finally:
        _JOBS.pop(key, None)


def _function_args(ds: "Dataset", table: pa.Table, input_columns: list[str] | None, batched: bool,
                   start: int) -> list[list[Any]]:
    """Arguments per call: one call per batch, or one per row."""
    if ds._format_type is not None or input_columns is not None:
        batch = format_table(table, ds._format_type, ds._format_columns, ds._output_all_columns)
    else:
        batch = None
    if batched:
        inputs = batch if batch is not None else table.to_pydict()
        if input_columns is not None:
            return [[inputs[c] for c in input_columns]]
        return [[inputs]]
    if input_columns is None and batch is None:
        return [[row] for row in table.to_pylist()]
    assert batch is not None
    n = table.num_rows
    if input_columns is not None:
        return [[batch[c][i] for c in input_columns] for i in range(n)]
    return [[{k: v[i] for k, v in batch.items()}] for i in range(n)]


def _output_columns(out: Any, batched: bool, n_in: int) -> dict[str, Any] | None:
    if out is None:
        return None
    if batched:
        if not isinstance(out, Mapping):
            raise TypeError(f"A batched map function must return a dict (a Mapping) of lists, got {type(out).__name__}")
        cols = {k: v for k, v in out.items()}
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"The map function returned columns of different lengths in one batch: {lengths}")
        return cols
    raise AssertionError("unbatched outputs are gathered by the caller")


def _merge(table: pa.Table, out: dict[str, Any] | None, remove: list[str], features: Features | None,
           in_features: Features) -> pa.Table:
    """Input columns (minus removed, overwritten ones in place) followed by new columns."""
    keep = [c for c in table.column_names if c not in remove]
    if out is None:
        return table.select(keep)
    n_out = len(next(iter(out.values()))) if out else table.num_rows
    kept_inputs = [c for c in keep if c not in out]
    if kept_inputs and n_out != table.num_rows:
        raise ValueError(
            f"The map function returned {n_out} rows for a batch of {table.num_rows}, so the input columns "
            f"{kept_inputs} cannot be kept alongside. Pass remove_columns={kept_inputs} (or the dataset's "
            "column_names) to drop them."
        )
    names, arrays = [], []
    for c in keep:
        names.append(c)
        arrays.append(_convert(c, out[c], features, in_features, table.column(c).type) if c in out else table.column(c))
    for c, values in out.items():
        if c not in keep:
            names.append(c)
            arrays.append(_convert(c, values, features, in_features, None))
    if not names:
        return pa.table({})
    return pa.Table.from_arrays(arrays, names=names)


def _convert(name: str, values: Any, features: Features | None, in_features: Features,
             original_type: pa.DataType | None) -> Any:
    if features is not None and name in features:
        return to_arrow_array(name, values, features[name])
    arr = to_arrow_array(name, values)
    if original_type is not None and arr.type != original_type and name in in_features:
        try:  # keep the input column's type (e.g. a ClassLabel) when the values still fit
            return arr.cast(original_type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
    return arr


def _result_features(schema: pa.Schema, in_features: Features, features: Features | None) -> Features:
    out = Features()
    for f in schema:
        if features is not None and f.name in features:
            out[f.name] = features[f.name]
        elif f.name in in_features and feature_to_arrow(in_features[f.name]) == f.type:
            out[f.name] = in_features[f.name]
        else:
            out[f.name] = feature_from_arrow(f.type)
    return out


def _as_list(x: str | list[str] | None) -> list[str] | None:
    return [x] if isinstance(x, str) else (list(x) if x is not None else None)


def run_map(ds: "Dataset", function: Callable | None, *, with_indices: bool, with_rank: bool,
            input_columns: str | list[str] | None, batched: bool, batch_size: int | None, drop_last_batch: bool,
            remove_columns: str | list[str] | None, keep_in_memory: bool, load_from_cache_file: bool | None,
            cache_file_name: str | None, writer_batch_size: int | None, features: Features | None,
            fn_kwargs: dict[str, Any] | None, num_proc: int | None, new_fingerprint: str | None,
            desc: str | None = None) -> "Dataset":
    from .arrow_dataset import _check_columns

    function = function or (lambda x, *args: x)
    remove = _check_columns(_as_list(remove_columns) or [], ds.column_names, "map(remove_columns=...)")
    if len(ds) == 0:  # nothing to call the function on: only the removals apply
        return ds.remove_columns(remove) if remove else ds._new()
    input_cols = _as_list(input_columns)
    if input_cols is not None:
        _check_columns(input_cols, ds.column_names, "map(input_columns=...)")
    fn_kwargs = dict(fn_kwargs or {})
    features = Features(features) if features is not None else None
    if batch_size is None or batch_size <= 0:
        batch_size = max(len(ds), 1)
    step = batch_size if batched else (writer_batch_size or 1000)
    fp = new_fingerprint or update_fingerprint(
        ds._fingerprint, "map", function, with_indices, with_rank, input_cols, batched, batch_size,
        drop_last_batch, remove, features.to_dict() if features else None, fn_kwargs, ds._format_type,
        ds._format_columns, num_proc if num_proc and num_proc > 1 else None)
    path = _cache_path(fp, cache_file_name, keep_in_memory)
    n_rows = len(ds)
    n_shards = max(1, min(num_proc or 1, n_rows))
    paths = [path] if path is None or n_shards == 1 else [_shard_path(path, i, n_shards) for i in range(n_shards)]
    if load_from_cache_file is not False and path is not None and all(os.path.exists(p) for p in paths):
        cached = [read_cached_arrow(p) for p in paths]
        if all(t is not None for t in cached):
            return _finish(ds, cached, fp, paths, features)
    if path is not None:
        remove_orphaned_temporaries(os.path.dirname(path) or ".")

    in_features = ds.features
    label = desc or ("Map" if n_shards == 1 else f"Map (num_proc={n_shards})")
    bar = progress.tqdm(total=n_rows, desc=label, unit=" examples")

    def work(shard: int, n: int, lo: int, hi: int) -> Any:
        target = paths[shard] if path is not None else None
        writer = ArrowWriter(target)
        try:
            for start in range(lo, hi, step):
                if n == 1 and start > lo:
                    bar.update(step)
                stop = min(start + step, hi)
                if batched and drop_last_batch and stop - start < batch_size:
                    break
                table = ds._rows(start, stop)
                calls = _function_args(ds, table, input_cols, batched, start)
                extra: list[Any] = []
                if batched:
                    if with_indices:
                        extra.append(list(range(start, stop)))
                    if with_rank:
                        extra.append(shard if n > 1 else None)
                    try:
                        result = function(*calls[0], *extra, **fn_kwargs)
                    except Exception as exc:
                        exc.add_note(f"map(): the function failed on the batch of rows {start} to {stop - 1}")
                        raise
                    out = _output_columns(result, True, table.num_rows)
                else:
                    results = []
                    for i, args in enumerate(calls):
                        a = list(args)
                        if with_indices:
                            a.append(start + i)
                        if with_rank:
                            a.append(shard if n > 1 else None)
                        try:
                            r = function(*a, **fn_kwargs)
                        except Exception as exc:
                            exc.add_note(f"map(): the function failed on row {start + i}")
                            raise
                        if r is not None and not isinstance(r, Mapping):
                            raise TypeError(f"A map function must return a dict (a Mapping) or None, got {type(r).__name__}")
                        results.append(r)
                    out = None if all(r is None for r in results) else rows_to_columns(
                        [r if r is not None else {} for r in results], "result of the map function")
                merged = _merge(table, out, remove, features, in_features)
                writer.write(merged)
            result = writer.finalize()
        except BaseException:
            writer.abort()
            raise
        # a path travels back from a worker cheaply; a table only when the cache was not writable
        return str(writer.written_path) if writer.written_path is not None else result

    try:
        results = _run_shards(n_rows, n_shards, work)
        bar.update(n_rows - bar.n)
    finally:
        bar.close()
    tables = [r if isinstance(r, pa.Table) else read_arrow_file(r) for r in results]
    return _finish(ds, tables, fp, [r for r in results if isinstance(r, str)], features)


def _finish(ds: "Dataset", tables: list[pa.Table], fp: str, paths: list[str], features: Features | None) -> "Dataset":
    from .arrow_dataset import Dataset, DatasetInfo

    tables = [t for t in tables if t.num_columns or t.num_rows] or tables
    schema = tables[0].schema
    table = pa.concat_tables([t.cast(schema) if t.schema != schema else t for t in tables]) if len(tables) > 1 else tables[0]
    feats = _result_features(table.schema, ds.features, features)
    table = attach_features(table.replace_schema_metadata(None), feats)
    info = DatasetInfo(description=ds.info.description, citation=ds.info.citation, homepage=ds.info.homepage,
                       license=ds.info.license, features=feats)
    out = Dataset(table, info=info, split=ds.split, fingerprint=fp)
    out._cache_files = list(paths)
    return out


def run_filter(ds: "Dataset", function: Callable | None, *, with_indices: bool, input_columns: str | list[str] | None,
               batched: bool, batch_size: int | None, keep_in_memory: bool, load_from_cache_file: bool | None,
               cache_file_name: str | None, fn_kwargs: dict[str, Any] | None, num_proc: int | None,
               new_fingerprint: str | None) -> "Dataset":
    """Compute a keep-mask with ``function`` and return the rows kept (as an indices mapping).

    The kept positions are cached in an Arrow file, so a repeated filter does not call
    ``function`` again.
    """
    from .arrow_dataset import _check_columns

    if function is None:
        return ds
    input_cols = _as_list(input_columns)
    if input_cols is not None:
        _check_columns(input_cols, ds.column_names, "filter(input_columns=...)")
    fn_kwargs = dict(fn_kwargs or {})
    if batch_size is None or batch_size <= 0:
        batch_size = max(len(ds), 1)
    step = batch_size if batched else 1000
    fp = new_fingerprint or update_fingerprint(ds._fingerprint, "filter", function, with_indices, input_cols,
                                               batched, batch_size, fn_kwargs, ds._format_type)
    path = _cache_path(fp, cache_file_name, keep_in_memory)
    if path is not None:
        path = path[:-len(".arrow")] + "-indices.arrow" if path.endswith(".arrow") else path + "-indices"
    cached = read_cached_arrow(path) if load_from_cache_file is not False and path is not None and os.path.exists(path) else None
    if cached is not None:
        return ds.select(cached.column(0).to_numpy(), new_fingerprint=fp)

    def work(shard: int, n: int, lo: int, hi: int) -> np.ndarray:
        keep: list[np.ndarray] = []
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            table = ds._rows(start, stop)
            calls = _function_args(ds, table, input_cols, batched, start)
            if batched:
                extra = [list(range(start, stop))] if with_indices else []
                mask = function(*calls[0], *extra, **fn_kwargs)
                mask = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else list(mask), dtype=bool)
                if mask.shape != (stop - start,):
                    raise ValueError(f"A batched filter function must return one bool per row: got {mask.shape[0]} "
                                     f"values for a batch of {stop - start} rows")
            else:
                mask = np.fromiter((bool(function(*args, *([start + i] if with_indices else []), **fn_kwargs))
                                    for i, args in enumerate(calls)), dtype=bool, count=stop - start)
            keep.append(np.nonzero(mask)[0] + start)
        return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)

    kept = np.concatenate(_run_shards(len(ds), num_proc, work)).astype(np.int64)
    if path is not None:
        writer = ArrowWriter(path)
        try:
            writer.write(pa.table({"indices": pa.array(kept, pa.int64())}))
            writer.finalize()
        except BaseException:
            writer.abort()
            raise
    return ds.select(kept, new_fingerprint=fp)
