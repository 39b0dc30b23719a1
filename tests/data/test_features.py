from __future__ import annotations

import json

import pyarrow as pa
import pytest

from openformers.data import ClassLabel, Features, Sequence, Value


def test_features_json_matches_hf(hf):
    ours = Features({"a": Value("int32"), "b": ClassLabel(names=["x", "y"]), "c": Sequence(Value("string")),
                     "d": {"e": Value("float64")}, "f": Sequence(Value("int8"), length=3)})
    theirs = hf.Features({"a": hf.Value("int32"), "b": hf.ClassLabel(names=["x", "y"]),
                          "c": hf.List(hf.Value("string")), "d": {"e": hf.Value("float64")},
                          "f": hf.List(hf.Value("int8"), length=3)})
    assert ours.to_dict() == theirs.to_dict()
    assert ours.arrow_schema.types == theirs.arrow_schema.types
    assert Features.from_dict(json.loads(json.dumps(theirs.to_dict()))) == ours
    legacy = {"s": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "Sequence"}}
    assert Features.from_dict(legacy)["s"] == Sequence(Value("int64"))


def test_value_and_classlabel_errors():
    with pytest.raises(ValueError, match="Unknown Value dtype"):
        Value("int65").pa_type
    assert Value("float").dtype == "float32" and Value("string").pa_type == pa.string()
    cl = ClassLabel(num_classes=3)
    assert cl.names == ["0", "1", "2"] and cl.int2str(2) == "2"
    with pytest.raises(ValueError, match="id"):
        cl.int2str(5)
    with pytest.raises(ValueError, match="names"):
        ClassLabel()
