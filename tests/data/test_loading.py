"""load_dataset / load_from_disk / exports: parity with ``datasets`` and round trips."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from openformers.data import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk

ROWS = [{"id": i, "text": f"line {i}", "score": i / 4, "flag": i % 2 == 0} for i in range(20)]


def _norm(t):
    # their CSV reader goes through pandas 3, whose string dtype surfaces as large_string;
    # we keep the plain string type every other reader (theirs too) produces
    return pa.string() if t == pa.large_string() else t


def same(ours, theirs):
    assert ours.column_names == theirs.column_names
    assert [_norm(t) for t in ours.data.schema.types] == [_norm(t) for t in theirs.data.schema.types]
    assert ours.to_dict() == theirs.to_dict()


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "data.csv").write_text("id,text,score\n" + "".join(f"{r['id']},{r['text']},{r['score']}\n" for r in ROWS))
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (d / "array.json").write_text(json.dumps(ROWS))
    (d / "data.txt").write_text("first line\nsecond line\n\nlast line without newline")
    return d


@pytest.mark.parametrize("builder,name", [("csv", "data.csv"), ("json", "data.jsonl"), ("json", "array.json"),
                                          ("text", "data.txt")])
def test_builders_match_hf(hf, files, tmp_path, builder, name):
    ours = load_dataset(builder, data_files=str(files / name))
    theirs = hf.load_dataset(builder, data_files=str(files / name), cache_dir=str(tmp_path / "hfc"))
    assert list(ours) == list(theirs) == ["train"]
    same(ours["train"], theirs["train"])


def test_parquet_round_trip_matches_hf(hf, tmp_path):
    feats = Features({"id": Value("int32"), "text": Value("string"), "label": ClassLabel(names=["a", "b"]),
                      "score": Value("float64"), "flag": Value("bool")})
    rows = [{**r, "label": r["id"] % 2} for r in ROWS]
    ds = Dataset.from_list(rows, features=feats)
    assert ds.to_parquet(tmp_path / "d.parquet") > 0
    back = load_dataset("parquet", data_files=str(tmp_path / "d.parquet"), split="train")
    same(back, ds)
    assert back.features["label"] == ClassLabel(names=["a", "b"])  # features travel in the metadata
    theirs = hf.load_dataset("parquet", data_files=str(tmp_path / "d.parquet"), split="train",
                             cache_dir=str(tmp_path / "hfc"))
    same(back, theirs)
    assert theirs.features.to_dict() == back.features.to_dict()


def test_csv_and_json_round_trips(hf, tmp_path):
    ds = Dataset.from_list(ROWS)
    ds.to_csv(tmp_path / "o.csv")
    ds.to_json(tmp_path / "o.jsonl")
    same(load_dataset("csv", data_files=str(tmp_path / "o.csv"), split="train"), ds)
    same(load_dataset("json", data_files=str(tmp_path / "o.jsonl"), split="train"), ds)
    # our writers agree with theirs byte for byte on simple data
    theirs = hf.Dataset.from_list(ROWS)
    theirs.to_csv(str(tmp_path / "t.csv"))
    theirs.to_json(str(tmp_path / "t.jsonl"))
    assert (tmp_path / "o.csv").read_text() == (tmp_path / "t.csv").read_text()
    assert [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()] == \
        [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]


def test_save_load_round_trip_and_interop(hf, tmp_path):
    feats = Features({"x": Value("int64"), "lab": ClassLabel(names=["n", "p"])})
    ds = Dataset.from_dict({"x": list(range(10)), "lab": [i % 2 for i in range(10)]}, features=feats)
    view = ds.shuffle(seed=0).select(range(7))
    view.save_to_disk(tmp_path / "one")
    back = load_from_disk(tmp_path / "one")
    same(back, view)
    assert back.features == view.features and back.cache_files
    theirs = hf.load_from_disk(str(tmp_path / "one"))
    same(back, theirs)
    assert theirs.features.to_dict() == feats.to_dict()
    # theirs -> ours, a DatasetDict with several shards
    hdd = hf.DatasetDict({"train": hf.Dataset.from_dict({"x": list(range(9))}),
                          "test": hf.Dataset.from_dict({"x": [7, 8]})})
    hdd.save_to_disk(str(tmp_path / "dd"), num_shards={"train": 3, "test": 1})
    dd = load_from_disk(tmp_path / "dd")
    assert isinstance(dd, DatasetDict) and dd["train"]["x"] == list(range(9)) and dd["test"]["x"] == [7, 8]
    dd.save_to_disk(tmp_path / "dd2")
    assert hf.load_from_disk(str(tmp_path / "dd2"))["train"]["x"][:] == list(range(9))
    # saving over an existing directory replaces it whole
    Dataset.from_dict({"y": [1]}).save_to_disk(tmp_path / "one")
    assert load_from_disk(tmp_path / "one").column_names == ["y"]
    with pytest.raises(FileNotFoundError, match="state.json"):
        load_from_disk(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_from_disk(tmp_path / "missing")


def test_local_dir_infers_splits_and_format(hf, tmp_path):
    d = tmp_path / "repo"
    (d / "data").mkdir(parents=True)
    Dataset.from_list(ROWS[:12]).to_parquet(d / "data" / "train-00000-of-00001.parquet")
    Dataset.from_list(ROWS[12:16]).to_parquet(d / "data" / "validation-00000-of-00001.parquet")
    Dataset.from_list(ROWS[16:]).to_parquet(d / "data" / "test-00000-of-00001.parquet")
    (d / "README.md").write_text("# toy")
    ours = load_dataset(str(d))
    theirs = hf.load_dataset(str(d), cache_dir=str(tmp_path / "hfc"))
    assert list(ours) == ["train", "validation", "test"] and set(ours) == set(theirs)
    for split in ours:
        same(ours[split], theirs[split])
    assert load_dataset(str(d), split="train[:5]")["id"] == list(range(5))
    assert load_dataset(str(d), split="train[50%:]")["id"] == list(range(6, 12))
    assert len(load_dataset(str(d), split="train+test")) == 16
    with pytest.raises(ValueError, match="Unknown split"):
        load_dataset(str(d), split="dev")


def test_data_files_dict_and_features(files):
    dd = load_dataset("csv", data_files={"train": str(files / "data.csv"), "test": [str(files / "data.csv")]})
    assert dd.num_rows == {"train": 20, "test": 20}
    feats = Features({"id": Value("int32"), "text": Value("string"), "score": Value("float32")})
    ds = load_dataset("csv", data_files=str(files / "data.csv"), split="train", features=feats)
    assert ds.data.schema.types == [pa.int32(), pa.string(), pa.float32()]
    with pytest.raises(FileNotFoundError, match="nothing"):
        load_dataset("csv", data_files=str(files / "nothing*.csv"))


def test_load_is_cached_and_memory_mapped(files, tmp_path):
    ds = load_dataset("json", data_files=str(files / "data.jsonl"), split="train")
    path = ds.cache_files[0]["filename"]
    assert path.startswith(str(tmp_path / "of_cache"))
    mtime = os.path.getmtime(path)
    again = load_dataset("json", data_files=str(files / "data.jsonl"), split="train")
    assert again.cache_files[0]["filename"] == path and os.path.getmtime(path) == mtime
    (files / "data.jsonl").write_text(json.dumps(ROWS[0]) + "\n")  # new content -> new cache entry
    assert len(load_dataset("json", data_files=str(files / "data.jsonl"), split="train")) == 1


def test_malformed_inputs(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,x\n2,y\n3,z,extra\n4,w\n")
    with pytest.raises(ValueError, match=r"bad\.csv at line 4"):
        load_dataset("csv", data_files=str(bad))
    badj = tmp_path / "bad.jsonl"
    badj.write_text('{"a": 1}\n{"a": 2}\n{"a": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl at line 3"):
        load_dataset("json", data_files=str(badj))
    # nothing half-written is left in the cache after a failure
    cache = tmp_path / "of_cache"
    leftovers = [f for _, _, fs in os.walk(cache) for f in fs] if cache.exists() else []
    assert leftovers == []


def test_csv_type_change_late_in_file_is_explained(tmp_path, monkeypatch):
    from openformers.data import readers

    monkeypatch.setattr(readers, "BLOCK_SIZE", 1024)
    p = tmp_path / "drift.csv"
    p.write_text("a\n" + "".join(f"{i}\n" for i in range(2000)) + "1.5\n")
    with pytest.raises(ValueError, match=r"drift\.csv.*features="):
        load_dataset("csv", data_files=str(p))
    feats = Features({"a": Value("float64")})
    assert load_dataset("csv", data_files=str(p), split="train", features=feats)["a"][-1] == 1.5


def test_hub_name_not_local_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_files"):
        load_dataset("someone/unknown-dataset")
    with pytest.raises(ValueError, match="data_files"):
        load_dataset("csv")


def test_finds_dataset_in_hf_cache(tmp_path, monkeypatch):
    root = tmp_path / "hf_home_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root))
    prepared = root / "someone___toy" / "default" / "0.0.0" / "abc123"
    prepared.mkdir(parents=True)
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    for split, n in (("train", 4), ("test", 2)):
        ds = Dataset.from_dict({"text": [f"{split}{i}" for i in range(n)], "label": [i % 2 for i in range(n)]},
                               features=feats)
        with pa.OSFile(str(prepared / f"toy-{split}.arrow"), "wb") as sink, \
                pa.ipc.new_stream(sink, ds.data.schema) as w:
            w.write_table(ds.data)
    info = {"features": feats.to_dict(), "splits": {"train": {"num_examples": 4}, "test": {"num_examples": 2}}}
    (prepared / "dataset_info.json").write_text(json.dumps(info))
    dd = load_dataset("someone/toy")
    assert list(dd) == ["train", "test"] and dd["train"]["text"] == ["train0", "train1", "train2", "train3"]
    assert dd["test"].features["label"] == ClassLabel(names=["neg", "pos"])
    assert load_dataset("toy", split="test")["text"] == ["test0", "test1"]
