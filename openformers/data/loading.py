"""``load_dataset`` for local files and directories, and datasets already in the HF cache.

Files are converted once into Arrow stream files in the cache (keyed by the files' paths, sizes
and modification times plus the reader options) and memory-mapped, so loading again is instant
and memory use does not grow with the file size. ``streaming=True`` reads the files lazily
instead and returns an :class:`IterableDataset`.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any

import pyarrow as pa

from .arrow_dataset import Dataset, DatasetInfo
from .conversion import cast_array
from .arrow_writer import ArrowWriter, cache_root, read_cached_arrow
from .conversion import attach_features
from .dataset_dict import DatasetDict
from .features import Features
from .fingerprint import hash_objects
from .readers import READERS, builder_for_file, read_files
from openformers.utils import progress

_SPLIT_KEYWORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}


def _expand(pattern: str, base: str | None) -> list[str]:
    full = pattern if base is None or os.path.isabs(pattern) else os.path.join(base, pattern)
    full = os.path.expanduser(full)
    if os.path.isdir(full):
        matches = [p for p in glob.glob(os.path.join(full, "**", "*"), recursive=True) if os.path.isfile(p)]
    else:
        matches = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
    matches = [p for p in sorted(matches) if not any(part.startswith((".", "__")) for part in p.split(os.sep)[-1:])]
    if not matches:
        raise FileNotFoundError(f"Unable to find data file(s) matching {pattern!r}"
                                + (f" in {base}" if base else "") + ". Check the path in data_files.")
    return [os.path.abspath(p) for p in matches]


def _normalize_data_files(data_files: Any, base: str | None) -> dict[str, list[str]]:
    if isinstance(data_files, (str, os.PathLike)):
        data_files = {"train": [str(data_files)]}
    elif isinstance(data_files, (list, tuple)):
        data_files = {"train": list(data_files)}
    elif not isinstance(data_files, dict):
        raise TypeError(f"data_files must be a str, a list or a dict of split -> files, got {type(data_files).__name__}")
    out = {}
    for split, pats in data_files.items():
        pats = [pats] if isinstance(pats, (str, os.PathLike)) else list(pats)
        out[str(split)] = [f for p in pats for f in _expand(str(p), base)]
    return out


def _split_of(path: str, root: str) -> str | None:
    rel = os.path.relpath(path, root).lower()
    tokens = re.split(r"[-_. /\\]+", rel)
    for split, words in _SPLIT_KEYWORDS.items():
        if any(w in tokens for w in words):
            return split
    return None


def _infer_from_dir(root: str) -> tuple[dict[str, list[str]], str]:
    files = [p for p in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True))
             if os.path.isfile(p) and builder_for_file(p) is not None
             and not any(part.startswith(".") for part in os.path.relpath(p, root).split(os.sep))]
    if not files:
        raise FileNotFoundError(f"No data files (csv, json, jsonl, txt, parquet, arrow) found in directory {root}")
    builders = {builder_for_file(p) for p in files}
    builder = max(builders, key=lambda b: sum(builder_for_file(p) == b for p in files))  # the majority format
    files = [p for p in files if builder_for_file(p) == builder]
    splits: dict[str, list[str]] = {}
    for p in files:
        splits.setdefault(_split_of(p, root) or "", []).append(os.path.abspath(p))
    if set(splits) == {""} or not any(splits.get(s) for s in _SPLIT_KEYWORDS):
        return {"train": files}, builder  # type: ignore[return-value]
    splits.pop("", None)
    order = [s for s in _SPLIT_KEYWORDS if s in splits]
    return {s: splits[s] for s in order}, builder  # type: ignore[return-value]


def _apply_features(table: pa.Table, features: Features | None) -> pa.Table:
    if features is None:
        return table
    missing = [c for c in features if c not in table.column_names]
    if missing:
        raise ValueError(f"Columns {missing} given in features are not in the data (columns: {table.column_names})")
    arrays = [cast_array(c, table.column(c), features[c]) for c in features]
    return attach_features(pa.Table.from_arrays(arrays, names=list(features)), features)


def _file_key(files: list[str]) -> list[Any]:
    return [(f, os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]


def _build_split(builder: str, files: list[str], split: str, features: Features | None, cache_dir: str | None,
                 keep_in_memory: bool, reader_kwargs: dict[str, Any], force: bool) -> Dataset:
    fp = hash_objects(builder, _file_key(files), sorted(reader_kwargs.items()), features.to_dict() if features else None)
    path = None if keep_in_memory else os.path.join(cache_dir or cache_root(), builder, fp, f"{split}.arrow")
    table = read_cached_arrow(path) if path is not None and os.path.exists(path) and not force else None
    if table is None:
        writer = ArrowWriter(path)
        bar = progress.tqdm(desc=f"Generating {split} split", unit=" examples")
        try:
            for batch in read_files(builder, files, features=features, **reader_kwargs):
                batch = _apply_features(batch, features)
                writer.write(batch)
                bar.update(batch.num_rows)
            table = writer.finalize()
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
    info = DatasetInfo(features=features)
    ds = Dataset(table, info=info, split=split, fingerprint=fp)
    if path is not None and os.path.exists(path):
        ds._cache_files = [path]
    return ds


_SLICE = re.compile(r"^\s*(\w[\w.-]*)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")


def _bound(v: str | None, n: int) -> int | None:
    if v is None:
        return None
    return round(int(v[:-1]) * n / 100) if v.endswith("%") else int(v)


def _select_split(dd: DatasetDict, split: str) -> Dataset:
    from .combine import concatenate_datasets

    parts = []
    for spec in split.split("+"):
        m = _SLICE.match(spec)
        if not m:
            raise ValueError(f"Bad split {split!r}: use 'train', 'train[:100]', 'train[10%:]' or 'train+test'")
        name = m.group(1)
        if name not in dd:
            raise ValueError(f"Unknown split {name!r}; available splits: {list(dd)}")
        ds = dd[name]
        if m.group(0).find("[") >= 0:
            start, stop, _ = slice(_bound(m.group(2), len(ds)), _bound(m.group(3), len(ds))).indices(len(ds))
            ds = ds.select(range(start, max(start, stop)))
        parts.append(ds)
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts, split=split)


def load_dataset(path: str, name: str | None = None, data_dir: str | None = None, data_files: Any = None,
                 split: str | None = None, cache_dir: str | None = None, features: Features | None = None,
                 download_config: Any = None, download_mode: str | None = None, verification_mode: Any = None,
                 keep_in_memory: bool | None = None, save_infos: bool = False, revision: str | None = None,
                 token: Any = None, streaming: bool = False, num_proc: int | None = None,
                 storage_options: dict | None = None, **config_kwargs: Any) -> Any:
    """Load a dataset from local files.

    ``path`` is a format name (``"csv"``, ``"json"``, ``"text"``, ``"parquet"``, ``"arrow"``)
    used with ``data_files``, a local directory (format and splits inferred from file names), a
    single data file, or the name of a dataset already in the Hugging Face cache. Returns a
    DatasetDict, or one Dataset when ``split`` is given; with ``streaming=True`` an
    IterableDataset (or IterableDatasetDict).
    """
    features = Features(features) if features is not None else None
    config_kwargs.pop("trust_remote_code", None)
    reader_kwargs = dict(config_kwargs)
    force = download_mode in ("force_redownload", "FORCE_REDOWNLOAD")
    base = os.path.expanduser(str(path))
    if path in READERS:
        if data_files is None and data_dir is not None:
            data_files = _infer_from_dir(data_dir)[0]
        elif data_files is None:
            raise ValueError(f'load_dataset("{path}") needs data_files=..., e.g. '
                             f'load_dataset("{path}", data_files={{"train": "train.{path}"}})')
        files = _normalize_data_files(data_files, data_dir)
        builder = path
    elif os.path.isdir(base):
        if os.path.exists(os.path.join(base, "state.json")) or os.path.exists(os.path.join(base, "dataset_dict.json")):
            from .disk import load_from_disk

            loaded = load_from_disk(base, keep_in_memory=keep_in_memory)
            if split is not None:
                return _select_split(loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded}), split)
            return loaded
        root = os.path.join(base, data_dir) if data_dir else base
        if data_files is not None:
            files = _normalize_data_files(data_files, root)
            builder = builder_for_file(next(iter(files.values()))[0]) or ""
        else:
            files, builder = _infer_from_dir(root)
    elif os.path.isfile(base) and builder_for_file(base):
        builder = builder_for_file(base)  # type: ignore[assignment]
        files = {"train": [os.path.abspath(base)]}
    else:
        from .hf_cache import load_from_hf_cache

        found = load_from_hf_cache(str(path), name=name, cache_dir=cache_dir)
        if found is None:
            raise FileNotFoundError(
                f"Dataset {path!r} is not a local file or directory and was not found in the Hugging Face "
                "datasets cache (HF_DATASETS_CACHE or ~/.cache/huggingface/datasets). openformers works "
                "offline: pass local files instead, e.g. load_dataset('csv', data_files={'train': 'train.csv'}), "
                "load_dataset('json', data_files='data.jsonl'), load_dataset('/path/to/dir') or "
                "load_from_disk('/path/saved_with_save_to_disk')."
            )
        if split is not None:
            return _select_split(found, split)
        return found
    if builder not in READERS:
        raise ValueError(f"Cannot tell the format of {files}; use load_dataset('csv'|'json'|'text'|'parquet', data_files=...)")
    if streaming:
        from .iterable import IterableDataset, IterableDatasetDict

        streams = {s: IterableDataset.from_files(builder, fs, features=features, split=s, **reader_kwargs)
                   for s, fs in files.items()}
        if split is not None:
            if split not in streams:
                raise ValueError(f"Unknown split {split!r}; available splits: {list(streams)}")
            return streams[split]
        return IterableDatasetDict(streams)
    wanted = None
    if split is not None:
        wanted = {(_SLICE.match(s).group(1) if _SLICE.match(s) else s) for s in split.split("+")}
        unknown = wanted - set(files)
        if unknown:
            raise ValueError(f"Unknown split {sorted(unknown)[0]!r}; available splits: {list(files)}")
    dd = DatasetDict({s: _build_split(builder, fs, s, features, cache_dir, bool(keep_in_memory), reader_kwargs, force)
                      for s, fs in files.items() if wanted is None or s in wanted})
    if split is not None:
        return _select_split(dd, split)
    return dd


def load_from_disk(dataset_path: str | os.PathLike, keep_in_memory: bool | None = None,
                   storage_options: dict | None = None) -> Any:
    """Load a Dataset or DatasetDict written by ``save_to_disk``."""
    from .disk import load_from_disk as _load

    return _load(dataset_path, keep_in_memory=keep_in_memory)
