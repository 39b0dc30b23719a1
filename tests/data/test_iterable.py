"""Streaming: ``load_dataset(..., streaming=True)`` and IterableDataset transforms."""
from __future__ import annotations

import json

import pytest
import torch

from openformers.data import Dataset, IterableDataset, interleave_datasets, load_dataset
from openformers.data import readers


@pytest.fixture
def jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"i": i, "t": f"w{i}"}) + "\n" for i in range(50)))
    return p


def test_streaming_matches_hf(hf, jsonl, tmp_path):
    ours = load_dataset("json", data_files=str(jsonl), split="train", streaming=True)
    theirs = hf.load_dataset("json", data_files=str(jsonl), split="train", streaming=True)
    assert isinstance(ours, IterableDataset)
    assert list(ours) == list(theirs)
    pipe = lambda d: (d.map(lambda b: {"n": [x * 2 for x in b["i"]]}, batched=True, batch_size=7)  # noqa: E731
                      .filter(lambda r: r["i"] % 3 == 0).skip(2).take(5))
    assert list(pipe(ours)) == list(pipe(theirs))
    assert list(ours.batch(16)) == list(theirs.batch(16))
    assert list(ours.remove_columns("t").rename_column("i", "k").take(2)) == \
        list(theirs.remove_columns("t").rename_column("i", "k").take(2))


def test_streaming_reads_incrementally(tmp_path, monkeypatch):
    p = tmp_path / "big.csv"
    p.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(20000)))
    monkeypatch.setattr(readers, "BLOCK_SIZE", 4096)  # force many blocks
    seen = []
    real = readers.read_csv

    def spy(*a, **kw):
        for t in real(*a, **kw):
            seen.append(t.num_rows)
            yield t

    monkeypatch.setitem(readers.READERS, "csv", spy)
    ds = load_dataset("csv", data_files=str(p), split="train", streaming=True)
    first = list(ds.take(3))
    assert first == [{"a": 0, "b": "x0"}, {"a": 1, "b": "x1"}, {"a": 2, "b": "x2"}]
    assert sum(seen) < 20000  # only the first block was parsed
    assert sum(1 for _ in ds) == 20000 and len(seen) > 10


def test_text_and_parquet_streaming(tmp_path):
    (tmp_path / "a.txt").write_text("x\ny\n")
    assert list(load_dataset("text", data_files=str(tmp_path / "a.txt"), split="train", streaming=True)) == \
        [{"text": "x"}, {"text": "y"}]
    Dataset.from_dict({"v": list(range(30))}).to_parquet(tmp_path / "p.parquet")
    s = load_dataset("parquet", data_files=str(tmp_path / "p.parquet"), split="train", streaming=True)
    assert [r["v"] for r in s] == list(range(30))
    dd = load_dataset("parquet", data_files={"train": str(tmp_path / "p.parquet")}, streaming=True)
    assert list(dd["train"].take(1)) == [{"v": 0}]


def test_shuffle_buffer_deterministic():
    ds = IterableDataset.from_generator(lambda: ({"i": i} for i in range(100)))
    a = [r["i"] for r in ds.shuffle(seed=3, buffer_size=10)]
    b = [r["i"] for r in ds.shuffle(seed=3, buffer_size=10)]
    c = [r["i"] for r in ds.shuffle(seed=4, buffer_size=10)]
    assert a == b and a != c and sorted(a) == list(range(100)) and a != list(range(100))
    sh = ds.shuffle(seed=3, buffer_size=10)
    sh.set_epoch(1)
    assert [r["i"] for r in sh] != a


def test_iterable_format_interleave_and_errors():
    a = IterableDataset.from_generator(lambda: ({"x": i} for i in range(3)))
    b = IterableDataset.from_generator(lambda: ({"x": 10 + i} for i in range(5)))
    assert [r["x"] for r in interleave_datasets([a, b])] == [0, 10, 1, 11, 2, 12]
    full = [r["x"] for r in interleave_datasets([a, b], stopping_strategy="all_exhausted")]
    assert set(full) == {0, 1, 2, 10, 11, 12, 13, 14}
    row = next(iter(a.with_format("torch")))
    assert isinstance(row["x"], torch.Tensor)
    with pytest.raises(ValueError, match="remove_columns"):
        list(a.map(lambda b: {"y": [1, 2, 3, 4]}, batched=True))
    assert list(Dataset.from_dict({"x": [1, 2]}).to_iterable_dataset()) == [{"x": 1}, {"x": 2}]
