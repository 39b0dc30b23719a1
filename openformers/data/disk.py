"""``save_to_disk`` / ``load_from_disk`` in the Hugging Face directory layout.

A dataset directory holds ``data-0000i-of-0000n.arrow`` (Arrow stream format), ``state.json``
and ``dataset_info.json``; a DatasetDict directory holds ``dataset_dict.json`` and one such
directory per split. Saving writes into a temporary sibling directory and renames it into place,
so an interrupted save never leaves a half-written dataset.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from openformers.core import durable
from openformers.core.hub import contained_path

from .arrow_writer import read_arrow_file
from .features import Features
from .fingerprint import hash_objects

if TYPE_CHECKING:  # pragma: no cover
    from .arrow_dataset import Dataset
    from .dataset_dict import DatasetDict


def _parse_size(size: int | str | None) -> int | None:
    if size is None or isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", size, re.I)
    if not m:
        raise ValueError(f"max_shard_size={size!r}: use an int of bytes or a string like '500MB'")
    mult = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    return int(float(m.group(1)) * mult[(m.group(2) or "").upper()])


def _write_dataset_dir(ds: "Dataset", target: Path, num_shards: int | None, max_shard_size: int | str | None) -> None:
    n = len(ds)
    if num_shards is None:
        limit = _parse_size(max_shard_size) or 500 * 10**6
        nbytes = ds._data.nbytes if ds._indices is None else int(ds._data.nbytes * n / max(ds._data.num_rows, 1))
        num_shards = max(1, min(n, -(-nbytes // limit))) if n else 1
    files = []
    schema = ds._data.schema
    for i in range(num_shards):
        lo, hi = i * n // num_shards, (i + 1) * n // num_shards
        name = f"data-{i:05d}-of-{num_shards:05d}.arrow"
        with pa.OSFile(str(target / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for s in range(lo, hi, 10_000):
                writer.write_table(ds._rows(s, min(s + 10_000, hi)).cast(schema))
        files.append({"filename": name})
    state = {
        "_data_files": files,
        "_fingerprint": ds._fingerprint,
        "_format_columns": ds._format_columns,
        "_format_kwargs": ds._format_kwargs,
        "_format_type": ds._format_type,
        "_output_all_columns": ds._output_all_columns,
        "_split": ds.split,
    }
    (target / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    (target / "dataset_info.json").write_text(json.dumps(ds.info.to_dict(), indent=2), encoding="utf-8")


def _publish(build: callable, path: str | os.PathLike) -> None:  # type: ignore[valid-type]
    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        build(tmp)
        durable.publish_dir(tmp, target, old=target.with_name(f".old-{target.name}-{os.getpid()}"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_dataset(ds: "Dataset", path: str | os.PathLike, num_shards: int | None = None,
                 max_shard_size: int | str | None = None) -> None:
    if ds._cache_files and any(Path(f).resolve().is_relative_to(Path(path).expanduser().resolve())
                               for f in ds._cache_files if Path(path).exists()):
        raise PermissionError(f"Cannot save the dataset into {path}: its data is read from files there. "
                              "Save it to another directory.")
    _publish(lambda tmp: _write_dataset_dir(ds, tmp, num_shards, max_shard_size), path)


def save_dataset_dict(dd: "DatasetDict", path: str | os.PathLike, num_shards: dict[str, int] | None = None,
                      max_shard_size: int | str | None = None) -> None:
    def build(tmp: Path) -> None:
        (tmp / "dataset_dict.json").write_text(json.dumps({"splits": list(dd)}), encoding="utf-8")
        for split, ds in dd.items():
            (tmp / split).mkdir()
            _write_dataset_dir(ds, tmp / split, (num_shards or {}).get(split), max_shard_size)

    _publish(build, path)


def _read_json(file: Path, kind: type) -> Any:
    """A JSON file of the saved dataset; ``ValueError`` naming it when corrupt."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); the saved dataset is corrupt") from exc
    if not isinstance(data, kind):
        raise ValueError(f"{file} must hold a JSON {kind.__name__}, found {type(data).__name__}")
    return data


def _load_dataset_dir(path: Path, keep_in_memory: bool | None) -> "Dataset":
    from .arrow_dataset import Dataset, DatasetInfo

    state_file = path / "state.json"
    state = _read_json(state_file, dict)
    entries = state.get("_data_files")
    if not isinstance(entries, list) or not entries or not all(isinstance(f, dict) and "filename" in f for f in entries):
        raise ValueError(f"{state_file}: '_data_files' must be a non-empty list of {{'filename': ...}}; the saved dataset is corrupt")
    files = [contained_path(path, f["filename"], f"{state_file}: _data_files filename") for f in entries]
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"{f} is listed in {state_file} but missing; the saved dataset is incomplete")
    tables = [read_arrow_file(f) for f in files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if keep_in_memory:
        table = table.combine_chunks()
    info_file = path / "dataset_info.json"
    info = DatasetInfo.from_dict(json.loads(info_file.read_text(encoding="utf-8"))) if info_file.exists() else None
    if info is not None and info.features is not None and list(info.features) != table.column_names:
        info.features = None
    if info is not None and info.features is None:
        info.features = Features.from_arrow_schema(table.schema)
    fp = state.get("_fingerprint") or hash_objects(str(path), [os.path.getmtime(f) for f in files])
    ds = Dataset(table, info=info, split=state.get("_split"), fingerprint=fp)
    if not keep_in_memory:
        ds._cache_files = [str(f) for f in files]
    fmt = state.get("_format_type")
    if fmt is not None or state.get("_format_columns") not in (None, table.column_names):
        ds.set_format(fmt, state.get("_format_columns"), state.get("_output_all_columns", False),
                      **(state.get("_format_kwargs") or {}))
    return ds


def load_from_disk(dataset_path: str | os.PathLike, keep_in_memory: bool | None = None,
                   storage_options: dict | None = None) -> "Dataset | DatasetDict":
    """Load a Dataset or DatasetDict saved with ``save_to_disk`` (by either library)."""
    from .dataset_dict import DatasetDict

    path = Path(dataset_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Directory {dataset_path} not found")
    if (path / "dataset_dict.json").exists():
        splits = _read_json(path / "dataset_dict.json", dict).get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise ValueError(f"{path / 'dataset_dict.json'}: 'splits' must be a list of split names")
        return DatasetDict({s: _load_dataset_dir(contained_path(path, s, f"{path / 'dataset_dict.json'}: split"), keep_in_memory)
                            for s in splits})
    if (path / "state.json").exists():
        return _load_dataset_dir(path, keep_in_memory)
    raise FileNotFoundError(
        f"{dataset_path} is neither a Dataset directory (no state.json) nor a DatasetDict directory "
        "(no dataset_dict.json). Use load_dataset for csv/json/text/parquet files."
    )
