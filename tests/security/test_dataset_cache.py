"""Cached ``map``/``load_dataset`` results: fingerprints that see module-level values, failures
that name the row and leave no cache file, truncated cache files rebuilt."""
from __future__ import annotations

import os
import sys
import time

import pytest

from openformers.data import Dataset, load_dataset


@pytest.fixture
def settings_module(tmp_path, monkeypatch):
    (tmp_path / "sec_fp_settings.py").write_text("OFFSET = 1\n\nclass Config:\n    SCALE = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sec_fp_settings

    yield sec_fp_settings
    sys.modules.pop("sec_fp_settings", None)


def test_map_sees_a_changed_module_attribute(settings_module):
    def add_offset(row):  # the module is a closure cell here
        return {"b": row["a"] + settings_module.OFFSET}

    ds = Dataset.from_dict({"a": [1, 2]})
    first = ds.map(add_offset)
    assert first["b"] == [2, 3]
    assert ds.map(add_offset)._cache_files == first._cache_files  # unchanged: the cache is used
    settings_module.OFFSET = 10
    assert ds.map(add_offset)["b"] == [11, 12]


def test_map_sees_a_changed_module_attribute_read_through_a_global(settings_module):
    ds = Dataset.from_dict({"a": [1, 2]})
    namespace = {"sec_fp_settings": settings_module}
    exec("def scale(row):\n    return {'b': row['a'] * sec_fp_settings.Config.SCALE}", namespace)
    assert ds.map(namespace["scale"])["b"] == [2, 4]
    settings_module.Config.SCALE = 3
    assert ds.map(namespace["scale"])["b"] == [3, 6]


def test_load_from_cache_file_false_recomputes(settings_module):
    ds = Dataset.from_dict({"a": [1]})
    state = {"n": 0}

    def counted(row):  # reads a value through a mutable object: load_from_cache_file=False recomputes
        state["n"] += 1
        return {"b": row["a"]}

    ds.map(counted)
    ds.map(counted, load_from_cache_file=False)
    assert state["n"] == 2


def test_map_failure_names_the_row_and_leaves_no_cache_file(tmp_path):
    ds = Dataset.from_dict({"a": list(range(10))})

    def fails_on_seven(row):
        if row["a"] == 7:
            raise KeyError("boom")
        return {"b": row["a"]}

    with pytest.raises(KeyError) as info:
        ds.map(fails_on_seven)
    assert "map(): the function failed on row 7" in getattr(info.value, "__notes__", [])
    cache = tmp_path / "of_cache" / "cache"
    assert not [p for p in cache.iterdir()] if cache.exists() else True

    def batched_fail(batch):
        raise ValueError("bad batch")

    with pytest.raises(ValueError) as info:
        ds.map(batched_fail, batched=True, batch_size=4)
    assert "map(): the function failed on the batch of rows 0 to 3" in info.value.__notes__


def test_orphaned_temporary_files_are_removed_at_the_next_run(tmp_path):
    ds = Dataset.from_dict({"a": [1, 2]})
    ds.map(lambda r: {"b": r["a"]})  # creates the cache folder
    cache = tmp_path / "of_cache" / "cache"
    orphan, fresh = cache / ".tmp-dead.arrow", cache / ".tmp-live.arrow"
    orphan.write_bytes(b"half")
    fresh.write_bytes(b"writing")
    old = time.time() - 2 * 3600
    os.utime(orphan, (old, old))
    ds.map(lambda r: {"c": r["a"]})
    assert not orphan.exists() and fresh.exists()


def _truncate(path: str, fraction: int) -> None:
    """Replace the file by its first part (a new file: the old one stays mapped by live datasets)."""
    data = open(path, "rb").read()
    with open(path + ".new", "wb") as f:
        f.write(data[: len(data) // fraction])
    os.replace(path + ".new", path)


def test_truncated_cache_file_is_rebuilt(tmp_path):
    ds = Dataset.from_dict({"a": list(range(1000)), "t": ["x" * 50] * 1000})

    def f(row):
        return {"b": row["a"] * 2}

    first = ds.map(f)
    (path,) = first._cache_files
    _truncate(path, 2)
    assert ds.map(f)["b"] == [2 * i for i in range(1000)]


def test_truncated_load_dataset_cache_is_rebuilt(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n" + "".join(f"{i},{'y' * 40}\n" for i in range(2000)))
    ds = load_dataset("csv", data_files=str(csv), split="train")
    (path,) = ds._cache_files
    _truncate(path, 3)
    assert load_dataset("csv", data_files=str(csv), split="train")["a"] == list(range(2000))


def test_unreadable_arrow_file_names_the_path(tmp_path):
    from openformers.data.arrow_writer import read_arrow_file

    path = tmp_path / "x.arrow"
    path.write_bytes(b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"\0" * 4)
    with pytest.raises(ValueError, match="x.arrow"):
        read_arrow_file(path)
