from __future__ import annotations

import pytest

from openformers.data import Dataset, DatasetDict, Features, Value


def make():
    return DatasetDict({"train": Dataset.from_dict({"x": [3, 1, 2], "s": ["c", "a", "b"]}),
                        "test": Dataset.from_dict({"x": [5, 4], "s": ["e", "d"]})})


def test_dataset_dict_matches_hf(hf):
    ours = make()
    theirs = hf.DatasetDict({k: hf.Dataset.from_dict(v.to_dict()) for k, v in ours.items()})
    ops = [lambda d: d.map(lambda r: {"y": r["x"] * 2}), lambda d: d.filter(lambda r: r["x"] > 1),
           lambda d: d.sort("x"), lambda d: d.rename_column("s", "t"), lambda d: d.remove_columns("s"),
           lambda d: d.select_columns(["s"]), lambda d: d.cast_column("x", Value("int16") if d is ours else hf.Value("int16"))]
    for op in ops:
        o, t = op(ours), op(theirs)
        assert o.column_names == t.column_names and o.num_rows == t.num_rows
        assert {k: v.to_dict() for k, v in o.items()} == {k: v.to_dict() for k, v in t.items()}
    assert ours.unique("s") == theirs.unique("s")
    sh = ours.shuffle(seed=1)
    assert sh["train"]["x"] == ours.shuffle(seed=1)["train"]["x"]
    ours.set_format("numpy")
    assert ours["test"][0]["x"] == 5
    with pytest.raises(KeyError, match="available splits"):
        ours["validation"]


def test_from_generator_is_cached(tmp_path):
    log = str(tmp_path / "calls.txt")  # a constant path: the generator's fingerprint must not change

    def gen(n):
        with open(log, "a") as f:
            f.write(f"{n}\n")
        for i in range(n):
            yield {"i": i, "sq": i * i}

    ds = Dataset.from_generator(gen, gen_kwargs={"n": 2500})
    assert len(ds) == 2500 and ds[2499] == {"i": 2499, "sq": 2499 ** 2} and ds.cache_files
    again = Dataset.from_generator(gen, gen_kwargs={"n": 2500})
    assert open(log).read().split() == ["2500"] and again["sq"] == ds["sq"]
    typed = Dataset.from_generator(gen, gen_kwargs={"n": 3}, features=Features({"i": Value("int8"), "sq": Value("int32")}))
    assert str(typed.data.schema.field("i").type) == "int8"
