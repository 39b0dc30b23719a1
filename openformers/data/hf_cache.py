"""Find a dataset that the Hugging Face ``datasets`` library already prepared in its cache.

Its layout is ``<cache>/<namespace>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow``
(or ``-<split>-00000-of-00003.arrow`` shards) with a ``dataset_info.json``. Nothing here
touches the network.
"""
from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

_SHARD = re.compile(r"^(?P<builder>.+?)-(?P<split>[A-Za-z0-9_.]+?)(?:-(?P<i>\d{5})-of-(?P<n>\d{5}))?\.arrow$")


def hf_cache_dir() -> Path:
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME")
    base = Path(hf_home).expanduser() if hf_home else Path.home() / ".cache" / "huggingface"
    return base / "datasets"


def _candidates(root: Path, repo: str) -> list[Path]:
    from openformers.core.hub import UnsafePathError, check_repo_id

    try:
        check_repo_id(repo)
    except UnsafePathError:
        return []  # "../x", "a--b", glob characters: no cached dataset has such a name
    dirs = [root / repo.replace("/", "___")]
    if "/" not in repo:
        dirs += [Path(p) for p in glob.glob(str(root / f"*___{glob.escape(repo)}"))]
    return [d for d in dirs if d.is_dir()]


def _latest_prepared(dataset_dir: Path, name: str | None) -> Path | None:
    from openformers.core.hub import contained_path

    configs = [contained_path(dataset_dir, name, "name")] if name else sorted(p for p in dataset_dir.iterdir() if p.is_dir())
    if not name and len(configs) > 1:
        preferred = [c for c in configs if c.name in ("default", "plain_text")]
        if preferred:
            configs = preferred
        else:
            raise ValueError(f"The cached dataset {dataset_dir.name} has several configs "
                             f"{[c.name for c in configs]}; pass name=... to choose one")
    best: tuple[float, Path] | None = None
    for cfg in configs:
        for info in glob.glob(str(cfg / "*" / "*" / "dataset_info.json")):
            d = Path(info).parent
            if any(d.glob("*.arrow")):
                mtime = os.path.getmtime(info)
                if best is None or mtime > best[0]:
                    best = (mtime, d)
    return best[1] if best else None


def load_from_hf_cache(repo: str, name: str | None = None, cache_dir: str | None = None) -> Any:
    """A DatasetDict of the cached splits, or None if the dataset is not in the cache."""
    from .arrow_dataset import Dataset, DatasetInfo
    from .arrow_writer import read_arrow_file
    from .dataset_dict import DatasetDict
    from .fingerprint import hash_objects

    root = Path(cache_dir).expanduser() if cache_dir else hf_cache_dir()
    if not root.is_dir():
        return None
    for dataset_dir in _candidates(root, repo):
        prepared = _latest_prepared(dataset_dir, name)
        if prepared is None:
            continue
        info_dict = json.loads((prepared / "dataset_info.json").read_text(encoding="utf-8"))
        split_names = list((info_dict.get("splits") or {}).keys())
        files: dict[str, list[tuple[int, Path]]] = {}
        for f in sorted(prepared.glob("*.arrow")):
            m = _SHARD.match(f.name)
            if not m:
                continue
            split = m.group("split")
            for s in split_names:  # split names may contain '-' or '.', prefer the declared ones
                if f.name.endswith(f"-{s}.arrow") or re.search(rf"-{re.escape(s)}-\d{{5}}-of-\d{{5}}\.arrow$", f.name):
                    split = s
            files.setdefault(split, []).append((int(m.group("i") or 0), f))
        if not files:
            continue
        order = [s for s in split_names if s in files] + [s for s in files if s not in split_names]
        out = DatasetDict()
        for split in order:
            tables = [read_arrow_file(p) for _, p in sorted(files[split])]
            table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            info = DatasetInfo.from_dict(info_dict)
            if info.features is not None and list(info.features) != table.column_names:
                info.features = None
            fp = hash_objects([(str(p), os.path.getmtime(p)) for _, p in sorted(files[split])])
            ds = Dataset(table, info=info, split=split, fingerprint=fp)
            ds._cache_files = [str(p) for _, p in sorted(files[split])]
            out[split] = ds
        return out
    return None
