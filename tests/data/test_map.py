"""``Dataset.map``: parity, on-disk caching by fingerprint, streaming writes and bad outputs."""
from __future__ import annotations

import os
from collections import UserDict

import pytest

from openformers.data import ClassLabel, Dataset, Features, Value, load_dataset

DATA = {"text": ["a b", "c", "d e f", "g", "h i"], "label": [0, 1, 0, 1, 1]}


def test_map_matches_hf(hf):
    ours, theirs = Dataset.from_dict(DATA), hf.Dataset.from_dict(DATA)

    def n_words(row):
        return {"n": len(row["text"].split())}

    def upper(batch, idx, suffix):
        return {"text": [t.upper() + suffix for t in batch["text"]], "idx": idx}

    cases = [
        dict(function=n_words),
        dict(function=upper, batched=True, batch_size=2, with_indices=True, fn_kwargs={"suffix": "!"}),
        dict(function=lambda b: {"w": [w for t in b["text"] for w in t.split()]}, batched=True,
             remove_columns=["text", "label"]),
        dict(function=lambda t: {"len": len(t)}, input_columns="text"),
        dict(function=lambda r, i: {"i": i * 10}, with_indices=True, remove_columns="label"),
        dict(function=lambda b: {"x": b["label"]}, batched=True, batch_size=2, drop_last_batch=True),
    ]
    for kw in cases:
        o, t = ours.map(**kw), theirs.map(**kw)
        assert o.column_names == t.column_names, kw
        assert o.data.schema.types == t.data.schema.types, kw
        assert o.to_dict() == t.to_dict(), kw


def test_tokenizer_like_output_matches_hf(hf):
    def encode(batch):
        ids = [[101] + [ord(c) for c in t] + [102] for t in batch["text"]]
        return {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids],
                "token_type_ids": [[0] * len(i) for i in ids], "labels": [[1] * len(i) for i in ids]}

    o = Dataset.from_dict(DATA).map(encode, batched=True, batch_size=2, remove_columns=["text"])
    t = hf.Dataset.from_dict(DATA).map(encode, batched=True, batch_size=2, remove_columns=["text"])
    assert o.data.schema.types == t.data.schema.types  # narrow int types for token columns
    assert o.features.to_dict() == t.features.to_dict()
    assert o.to_dict() == t.to_dict()


def test_map_keeps_classlabel_and_honours_features(hf):
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    ds = Dataset.from_dict(DATA, features=feats)
    out = ds.map(lambda r: {"label": 1 - r["label"]})
    assert isinstance(out.features["label"], ClassLabel) and out["label"] == [1, 0, 1, 0, 0]
    typed = ds.map(lambda r: {"n": 1}, features=Features({**feats, "n": Value("int8")}))
    assert str(typed.data.schema.field("n").type) == "int8"


def test_map_cache_hit_skips_function(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "\n".join(f"row {i},{i % 2}" for i in range(50)) + "\n")
    calls = []

    def tok(batch):
        calls.append(len(batch["text"]))
        return {"n": [len(t) for t in batch["text"]]}

    ds = load_dataset("csv", data_files=str(csv), split="train")
    first = ds.map(tok, batched=True, batch_size=16)
    assert sum(calls) == 50 and first.cache_files
    assert os.path.exists(first.cache_files[0]["filename"])
    calls.clear()
    again = load_dataset("csv", data_files=str(csv), split="train").map(tok, batched=True, batch_size=16)
    assert calls == [] and again.to_dict() == first.to_dict()
    # in-memory datasets are fingerprinted by content, so they hit the cache too
    mem = Dataset.from_dict(DATA)
    mem.map(tok, batched=True)
    calls.clear()
    Dataset.from_dict(DATA).map(tok, batched=True)
    assert calls == []
    # a change of code, closure value, argument or input is a miss
    Dataset.from_dict(DATA).map(tok, batched=True, batch_size=2)
    assert calls
    calls.clear()
    Dataset.from_dict(DATA).map(tok, batched=True, load_from_cache_file=False)
    assert calls
    factor = 2

    def scaled(r):
        return {"y": r["label"] * factor}

    assert Dataset.from_dict(DATA).map(scaled)["y"] == [0, 2, 0, 2, 2]
    factor = 3

    def scaled(r):  # noqa: F811 - same name, same code, new closure value
        return {"y": r["label"] * factor}

    assert Dataset.from_dict(DATA).map(scaled)["y"] == [0, 3, 0, 3, 3]


def test_map_closure_and_defaults_change_fingerprint():
    ds = Dataset.from_dict(DATA)

    def make(k):
        return lambda r: {"k": k}

    assert ds.map(make(1))["k"][0] == 1
    assert ds.map(make(2))["k"][0] == 2

    def with_default(r, k=5):
        return {"k": k}

    assert ds.map(with_default)["k"][0] == 5
    assert ds.map(with_default, fn_kwargs={"k": 6})["k"][0] == 6


def test_map_accepts_any_mapping_and_tensors():
    import numpy as np
    import torch

    class Encoding(UserDict):  # like a tokenizer's BatchEncoding
        pass

    ds = Dataset.from_dict(DATA)
    out = ds.map(lambda b: Encoding(input_ids=[[1, 2]] * len(b["text"]),
                                    mask=np.ones((len(b["text"]), 2), dtype=np.int64)), batched=True)
    assert out[0]["input_ids"] == [1, 2] and out[0]["mask"] == [1, 1]
    t = ds.map(lambda b: {"t": torch.arange(len(b["text"]))}, batched=True)
    assert t["t"] == [0, 1, 2, 3, 4]
    same = ds.map(lambda r: None)
    assert same.to_dict() == ds.to_dict()


def test_map_num_proc_matches_single(tmp_path):
    ds = Dataset.from_dict({"x": list(range(101))})
    single = ds.map(lambda b, i: {"y": [v * 2 for v in b["x"]], "i": i}, batched=True, with_indices=True)
    multi = ds.map(lambda b, i: {"y": [v * 2 for v in b["x"]], "i": i}, batched=True, with_indices=True, num_proc=2)
    assert multi.to_dict() == single.to_dict()
    assert len(multi.cache_files) == 2
    assert ds.filter(lambda r: r["x"] % 3 == 0, num_proc=2)["x"] == list(range(0, 101, 3))


def test_map_streams_to_arrow_file():
    ds = Dataset.from_dict({"x": list(range(5000))})
    out = ds.map(lambda b: {"y": b["x"]}, batched=True, batch_size=100)
    assert out.data.num_rows == 5000
    assert len(out.data.column("y").chunks) == 50  # one record batch written per input batch
    mem = ds.map(lambda b: {"y": b["x"]}, batched=True, keep_in_memory=True)
    assert mem.cache_files == [] and mem["y"] == list(range(5000))


def test_map_bad_outputs():
    ds = Dataset.from_dict(DATA)
    with pytest.raises(ValueError, match=r"remove_columns=\['text', 'label'\]"):
        ds.map(lambda b: {"w": [1] * (len(b["text"]) + 1)}, batched=True)
    with pytest.raises(ValueError, match="different lengths"):
        ds.map(lambda b: {"a": [1] * len(b["text"]), "b": [1]}, batched=True)
    with pytest.raises(ValueError, match="missing"):
        ds.map(lambda r: r, remove_columns=["missing"])
    with pytest.raises(TypeError, match="'bad'"):
        ds.map(lambda r: {"bad": object()})
    with pytest.raises(TypeError, match="Mapping"):
        ds.map(lambda b: [1, 2], batched=True)


def test_failed_map_leaves_no_cache_file(tmp_path):
    ds = Dataset.from_dict({"x": list(range(300))})

    def boom(b):
        if b["x"][0] >= 200:
            raise RuntimeError("fail late")
        return {"y": b["x"]}

    with pytest.raises(RuntimeError):
        ds.map(boom, batched=True, batch_size=100)
    cache = tmp_path / "of_cache" / "cache"
    assert not cache.exists() or os.listdir(cache) == []


def test_read_only_cache_falls_back_to_memory(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    if os.access(ro, os.W_OK):  # running as root: permissions are not enforced
        monkeypatch.setenv("OPENFORMERS_DATA_CACHE", "/proc/openformers-cache")
    else:
        monkeypatch.setenv("OPENFORMERS_DATA_CACHE", str(ro))
    ds = Dataset.from_dict(DATA)
    with pytest.warns(UserWarning, match="in memory"):
        out = ds.map(lambda r: {"n": 1})
    assert out["n"] == [1] * 5 and out.cache_files == []
