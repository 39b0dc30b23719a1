"""Dataset operations compared with the Hugging Face ``datasets`` library on the same inputs."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from openformers.data import ClassLabel, Dataset, Features, Sequence, Value, concatenate_datasets, interleave_datasets

DATA = {
    "id": [3, 1, 4, 1, 5, 9, 2, 6],
    "text": ["c", "a", "d", "a", "e", "i", "b", "f"],
    "score": [0.5, 1.5, None, 2.5, 3.0, 0.0, 1.0, 9.5],
    "tokens": [[1], [2, 3], [], [4], [5, 6, 7], [8], [9], [10, 11]],
    "meta": [{"x": i, "y": str(i)} for i in range(8)],
}


def both(hf):
    return Dataset.from_dict(DATA), hf.Dataset.from_dict(DATA)


def same(ours, theirs):
    assert ours.column_names == theirs.column_names
    assert ours.data.schema.types == theirs.data.schema.types
    assert ours.to_dict() == theirs.to_dict()


def test_construction_matches(hf):
    ours, theirs = both(hf)
    same(ours, theirs)
    assert ours.features.to_dict() == theirs.features.to_dict()
    rows = [dict(zip(DATA, vals)) for vals in zip(*DATA.values())]
    same(Dataset.from_list(rows), hf.Dataset.from_list(rows))
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [0.5, 1.0]})
    same(Dataset.from_pandas(df), hf.Dataset.from_pandas(df))


def test_indexing_matches(hf):
    ours, theirs = both(hf)
    assert ours[0] == theirs[0]
    assert ours[-1] == theirs[-1]
    assert ours[2:6] == theirs[2:6]
    assert ours[::3] == theirs[::3]
    assert ours[[5, 0, 2]] == theirs[[5, 0, 2]]
    assert ours["text"] == list(theirs["text"])
    assert list(ours) == list(theirs)
    assert len(ours) == ours.num_rows == 8
    with pytest.raises(IndexError):
        ours[8]
    with pytest.raises(KeyError, match="nope"):
        ours["nope"]


def test_row_operations_match(hf):
    ours, theirs = both(hf)
    same(ours.select([7, 0, 3]), theirs.select([7, 0, 3]))
    same(ours.sort("id"), theirs.sort("id"))
    same(ours.sort("score", reverse=True), theirs.sort("score", reverse=True))
    same(ours.sort(["text", "id"]), theirs.sort(["text", "id"]))
    for i in range(3):
        same(ours.shard(3, i), theirs.shard(3, i))
        same(ours.shard(3, i, contiguous=False), theirs.shard(3, i, contiguous=False))
    same(ours.filter(lambda r: r["id"] > 2), theirs.filter(lambda r: r["id"] > 2))
    same(ours.filter(lambda b: [x % 2 == 0 for x in b["id"]], batched=True, batch_size=3),
         theirs.filter(lambda b: [x % 2 == 0 for x in b["id"]], batched=True, batch_size=3))
    assert ours.unique("text") == theirs.unique("text")
    # chained mappings compose
    same(ours.sort("id").select([1, 2, 3]).shuffle(seed=0).sort("text"),
         theirs.sort("id").select([1, 2, 3]).shuffle(seed=0).sort("text"))


def test_shuffle_and_split_deterministic(hf):
    ours, _ = both(hf)
    a, b = ours.shuffle(seed=42), ours.shuffle(seed=42)
    assert a["id"] == b["id"] and sorted(a["id"]) == sorted(DATA["id"])
    big = Dataset.from_dict({"i": list(range(50))})
    assert big.shuffle(seed=1)["i"] != big.shuffle(seed=2)["i"]
    assert ours.shuffle(seed=1)[:]["id"] == ours.shuffle(seed=1)["id"]
    split = ours.train_test_split(test_size=0.25, seed=0)
    assert split.num_rows == {"train": 6, "test": 2}
    assert sorted(split["train"]["id"] + split["test"]["id"]) == sorted(DATA["id"])
    assert split["test"]["id"] == ours.train_test_split(test_size=0.25, seed=0)["test"]["id"]
    theirs = hf.Dataset.from_dict(DATA).train_test_split(test_size=3, train_size=4, shuffle=False)
    mine = ours.train_test_split(test_size=3, train_size=4, shuffle=False)
    same(mine["train"], theirs["train"])
    same(mine["test"], theirs["test"])
    with pytest.raises(ValueError, match="test_size"):
        ours.train_test_split(test_size=1.5)


def test_column_operations_match(hf):
    ours, theirs = both(hf)
    same(ours.rename_column("text", "t"), theirs.rename_column("text", "t"))
    same(ours.rename_columns({"id": "i", "score": "s"}), theirs.rename_columns({"id": "i", "score": "s"}))
    same(ours.remove_columns(["meta", "score"]), theirs.remove_columns(["meta", "score"]))
    same(ours.select_columns(["text", "id"]), theirs.select_columns(["text", "id"]))
    same(ours.flatten(), theirs.flatten())
    same(ours.cast_column("id", Value("float32")), theirs.cast_column("id", hf.Value("float32")))
    same(ours.add_column("new", list(range(8))), theirs.add_column("new", list(range(8))))
    # add_column on a shuffled view aligns with the visible rows
    sh = ours.shuffle(seed=3)
    added = sh.add_column("pos", list(range(8)))
    assert added["pos"] == list(range(8)) and added["id"] == sh["id"]
    with pytest.raises(ValueError, match="rows"):
        ours.add_column("bad", [1, 2])
    with pytest.raises(ValueError, match="nope"):
        ours.remove_columns("nope")
    with pytest.raises(ValueError, match="duplicate"):
        ours.rename_column("id", "text")


def test_class_label(hf):
    labels = {"label": ["neg", "pos", "pos", "neg"], "x": [1, 2, 3, 4]}
    cl = ClassLabel(names=["neg", "pos"])
    ours = Dataset.from_dict(labels).cast_column("label", cl)
    theirs = hf.Dataset.from_dict(labels).cast_column("label", hf.ClassLabel(names=["neg", "pos"]))
    same(ours, theirs)
    assert ours.features.to_dict() == theirs.features.to_dict()
    assert cl.str2int("pos") == 1 and cl.str2int(["neg", "pos"]) == [0, 1]
    assert cl.int2str(0) == "neg" and cl.int2str([1, 0]) == ["pos", "neg"]
    with pytest.raises(ValueError, match="maybe"):
        cl.str2int("maybe")
    with pytest.raises(ValueError, match="not in the ClassLabel"):
        Dataset.from_dict({"label": ["neg", "meh"]}).cast_column("label", cl)
    enc = Dataset.from_dict(labels).class_encode_column("label")
    assert enc.features["label"].names == ["neg", "pos"] and enc["label"] == [0, 1, 1, 0]
    built = Dataset.from_dict(labels, features=Features({"label": cl, "x": Value("int32")}))
    assert built["label"] == [0, 1, 1, 0] and built.data.schema.field("x").type == pa.int32()
    seq = Dataset.from_dict({"t": [[1, 2]]}, features=Features({"t": Sequence(Value("int16"))}))
    assert seq.data.schema.field("t").type == pa.list_(pa.int16())


def test_concatenate_and_interleave_match(hf):
    a = {"x": [0, 1, 2], "y": ["a", "b", "c"]}
    b = {"x": [10, 11, 12, 13], "y": ["d", "e", "f", "g"]}
    c = {"x": [20, 21], "y": ["h", "i"]}
    ours = [Dataset.from_dict(d) for d in (a, b, c)]
    theirs = [hf.Dataset.from_dict(d) for d in (a, b, c)]
    same(concatenate_datasets(ours), hf.concatenate_datasets(theirs))
    same(concatenate_datasets([ours[0].shuffle(seed=1), ours[1]]).sort("x"),
         hf.concatenate_datasets([theirs[0].shuffle(seed=1), theirs[1]]).sort("x"))
    side = [Dataset.from_dict({"p": [1, 2]}), Dataset.from_dict({"q": ["u", "v"]})]
    same(concatenate_datasets(side, axis=1),
         hf.concatenate_datasets([hf.Dataset.from_dict({"p": [1, 2]}), hf.Dataset.from_dict({"q": ["u", "v"]})], axis=1))
    for strategy in ("first_exhausted", "all_exhausted"):
        same(interleave_datasets(ours, stopping_strategy=strategy),
             hf.interleave_datasets(theirs, stopping_strategy=strategy))
    p1 = interleave_datasets(ours, probabilities=[0.2, 0.5, 0.3], seed=7, stopping_strategy="all_exhausted")
    p2 = interleave_datasets(ours, probabilities=[0.2, 0.5, 0.3], seed=7, stopping_strategy="all_exhausted")
    assert p1["x"] == p2["x"] and set(p1["x"]) == set(a["x"] + b["x"] + c["x"])
    with pytest.raises(ValueError, match="columns"):
        concatenate_datasets([ours[0], Dataset.from_dict({"z": [1]})])


def test_formats_match(hf):
    data = {"ids": [[1, 2], [3, 4]], "f": [0.5, 1.5], "s": ["a", "b"], "n": [1, 2]}
    ours, theirs = Dataset.from_dict(data), hf.Dataset.from_dict(data)
    ot, tt = ours.with_format("torch"), theirs.with_format("torch")
    for key in (0, slice(0, 2)):
        o, t = ot[key], tt[key]
        assert o.keys() == t.keys()
        for k in o:
            if isinstance(t[k], torch.Tensor):
                assert o[k].dtype == t[k].dtype and torch.equal(o[k], t[k])
            else:
                assert o[k] == t[k]
    assert torch.equal(ot["n"], tt["n"][:])
    on, tn = ours.with_format("numpy")[:], theirs.with_format("numpy")[:]
    for k in on:
        np.testing.assert_array_equal(on[k], tn[k])
        assert on[k].dtype == tn[k].dtype
    assert ours.with_format("pandas")[:].equals(theirs.with_format("pandas")[:])
    assert ours.with_format("arrow")[:].equals(theirs.with_format("arrow")[:].cast(ours.data.schema))
    cols = ours.with_format("torch", columns=["n"])
    assert list(cols[0]) == ["n"]
    assert set(ours.with_format("torch", columns=["n"], output_all_columns=True)[0]) == set(data)
    rows = list(ours.with_format("torch"))
    assert torch.equal(rows[1]["ids"], torch.tensor([3, 4]))
    ours.set_format("numpy")
    assert isinstance(ours[0]["n"], np.integer)
    ours.reset_format()
    assert ours[0]["n"] == 1
    tr = ours.with_transform(lambda b: {"n2": [x * 2 for x in b["n"]]})
    assert tr[0] == {"n2": 2} and tr[:] == {"n2": [2, 4]}


def test_export_helpers():
    ds = Dataset.from_dict({"a": [1, 2], "b": ["x", "y"]})
    assert ds.to_list() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert ds.to_dict() == {"a": [1, 2], "b": ["x", "y"]}
    assert ds.to_pandas()["b"].tolist() == ["x", "y"]
    assert ds.shuffle(seed=0).to_pandas()["a"].tolist() == ds.shuffle(seed=0)["a"]
    assert "num_rows: 2" in repr(ds)


def test_unstorable_type_names_column():
    with pytest.raises(TypeError, match="'obj'"):
        Dataset.from_dict({"ok": [1], "obj": [object()]})


def test_indices_mapping_helpers(tmp_path):
    ds = Dataset.from_dict({"x": list(range(10))})
    view = ds.shuffle(seed=5).select(range(4))
    flat = view.flatten_indices()
    assert flat["x"] == view["x"] and flat._indices is None and flat.cache_files
    assert [b["x"] for b in view.iter(batch_size=3)] == [view["x"][:3], view["x"][3:]]
    assert list(ds.take(2)) == [{"x": 0}, {"x": 1}] and ds.skip(8)["x"] == [8, 9]
    with pytest.raises(IndexError, match="out of range"):
        ds.select([10])
    assert ds[torch.tensor([3, 1])] == {"x": [3, 1]}
    ds.to_json(tmp_path / "a.json", lines=False)
    import json

    assert json.loads((tmp_path / "a.json").read_text()) == [{"x": i} for i in range(10)]
