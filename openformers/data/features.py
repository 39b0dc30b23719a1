"""Feature types: the typed schema of a dataset (``Value``, ``ClassLabel``, ``Sequence``).

Features map one to one onto Arrow types and serialise to the same JSON layout the Hugging
Face ``datasets`` library writes in ``dataset_info.json`` and in the Arrow schema metadata, so
datasets saved by either library load in the other.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa

# Value dtype names <-> Arrow types (the dtype strings are the Hugging Face spelling).
_DTYPE_TO_ARROW: dict[str, pa.DataType] = {
    "null": pa.null(), "bool": pa.bool_(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float16": pa.float16(), "float32": pa.float32(), "float64": pa.float64(),
    "string": pa.string(), "large_string": pa.large_string(),
    "binary": pa.binary(), "large_binary": pa.large_binary(),
    "date32": pa.date32(), "date64": pa.date64(),
}
_ALIASES = {"float": "float32", "double": "float64", "boolean": "bool", "utf8": "string", "half": "float16"}


def _dtype_from_arrow(t: pa.DataType) -> str:
    for name, at in _DTYPE_TO_ARROW.items():
        if at == t:
            return name
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}" + (f", tz={t.tz}]" if t.tz else "]")
    if pa.types.is_time(t) or pa.types.is_duration(t) or pa.types.is_decimal(t):
        return str(t)
    raise TypeError(f"Arrow type {t} has no Value equivalent")


@dataclass
class Value:
    """A scalar feature, e.g. ``Value("int64")`` or ``Value("string")``."""

    dtype: str
    id: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.dtype = _ALIASES.get(self.dtype, self.dtype)

    def __repr__(self) -> str:
        return f"Value('{self.dtype}')"

    @property
    def pa_type(self) -> pa.DataType:
        if self.dtype in _DTYPE_TO_ARROW:
            return _DTYPE_TO_ARROW[self.dtype]
        if self.dtype.startswith("timestamp["):
            inner = self.dtype[len("timestamp["):-1]
            unit, _, tz = inner.partition(", tz=")
            return pa.timestamp(unit, tz or None)
        try:
            return pa.type_for_alias(self.dtype)
        except (ValueError, KeyError):
            raise ValueError(f"Unknown Value dtype {self.dtype!r}; use one of {sorted(_DTYPE_TO_ARROW)}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "_type": "Value"}


@dataclass
class ClassLabel:
    """An integer label with names: ``ClassLabel(names=["neg", "pos"])`` (stored as int64)."""

    num_classes: int | None = None
    names: list[str] | None = None
    names_file: str | None = field(default=None, repr=False)
    id: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.names_file is not None and self.names is None:
            with open(self.names_file, encoding="utf-8") as f:
                self.names = [line.strip() for line in f if line.strip()]
        if self.names is None:
            if self.num_classes is None:
                raise ValueError("ClassLabel needs `names`, `names_file` or `num_classes`")
            self.names = [str(i) for i in range(self.num_classes)]
        self.names = [str(n) for n in self.names]
        if self.num_classes is None:
            self.num_classes = len(self.names)
        elif self.num_classes != len(self.names):
            raise ValueError(f"ClassLabel num_classes={self.num_classes} but {len(self.names)} names were given")
        self._str2int = {name: i for i, name in enumerate(self.names)}

    def __repr__(self) -> str:
        return f"ClassLabel(names={self.names})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassLabel) and self.names == other.names

    pa_type = pa.int64()

    def str2int(self, values: str | Iterable[str]) -> int | list[int]:
        """Label name(s) -> id(s). Raises ``ValueError`` naming an unknown label."""
        if isinstance(values, str):
            return self._one_str2int(values)
        return [self._one_str2int(v) for v in values]

    def _one_str2int(self, value: str) -> int:
        if value in self._str2int:
            return self._str2int[value]
        stripped = str(value).strip()
        if stripped in self._str2int:
            return self._str2int[stripped]
        if stripped.isdigit() and int(stripped) < self.num_classes:
            return int(stripped)
        raise ValueError(f"Invalid label {value!r}: expected one of {self.names}")

    def int2str(self, values: int | Iterable[int]) -> str | list[str]:
        """Label id(s) -> name(s). Raises ``ValueError`` for an out-of-range id."""
        if isinstance(values, (int,)) or hasattr(values, "__index__"):
            return self._one_int2str(int(values))
        return [self._one_int2str(int(v)) for v in values]

    def _one_int2str(self, value: int) -> str:
        if not 0 <= value < self.num_classes:
            raise ValueError(f"Invalid label id {value}: expected 0 <= id < {self.num_classes}")
        return self.names[value]

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "_type": "ClassLabel"}


@dataclass
class Sequence:
    """A list of a feature: ``Sequence(Value("int32"))``; ``length`` > 0 makes it fixed-size."""

    feature: Any
    length: int = -1
    id: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        extra = f", length={self.length}" if self.length != -1 else ""
        return f"List({self.feature!r}{extra})"

    @property
    def pa_type(self) -> pa.DataType:
        inner = feature_to_arrow(self.feature)
        return pa.list_(inner, self.length) if self.length >= 0 else pa.list_(inner)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feature": _feature_to_json(self.feature), "_type": "List"}
        if self.length != -1:
            out["length"] = self.length
        return out


List = Sequence  # the name newer Hugging Face releases use for the same feature


def feature_to_arrow(feature: Any) -> pa.DataType:
    """Arrow type of a feature (a dict means a struct)."""
    if isinstance(feature, dict):
        return pa.struct([pa.field(k, feature_to_arrow(v)) for k, v in feature.items()])
    if isinstance(feature, list):  # [Value(...)] is the short form of a list feature
        return pa.list_(feature_to_arrow(feature[0]))
    return feature.pa_type


def feature_from_arrow(t: pa.DataType) -> Any:
    """Feature for an Arrow type (the inverse of :func:`feature_to_arrow`)."""
    if pa.types.is_struct(t):
        return {t.field(i).name: feature_from_arrow(t.field(i).type) for i in range(t.num_fields)}
    if pa.types.is_fixed_size_list(t):
        return Sequence(feature_from_arrow(t.value_type), length=t.list_size)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return Sequence(feature_from_arrow(t.value_type))
    if pa.types.is_dictionary(t):
        return feature_from_arrow(t.value_type)
    return Value(_dtype_from_arrow(t))


def _feature_to_json(feature: Any) -> Any:
    if isinstance(feature, dict):
        return {k: _feature_to_json(v) for k, v in feature.items()}
    if isinstance(feature, list):
        return Sequence(feature[0]).to_dict()
    return feature.to_dict()


def _feature_from_json(obj: Any) -> Any:
    if isinstance(obj, list):
        return Sequence(_feature_from_json(obj[0]))
    if not isinstance(obj, dict):
        raise ValueError(f"Cannot read feature description {obj!r}")
    kind = obj.get("_type")
    if kind is None:
        return {k: _feature_from_json(v) for k, v in obj.items()}
    if kind == "Value":
        return Value(obj["dtype"])
    if kind == "ClassLabel":
        return ClassLabel(names=obj.get("names"), num_classes=obj.get("num_classes"))
    if kind in ("Sequence", "List", "LargeList"):
        inner = _feature_from_json(obj["feature"])
        length = obj.get("length", -1)
        if kind == "Sequence" and isinstance(inner, dict):
            # legacy Sequence of a dict is stored as a dict of lists
            return {k: Sequence(v, length=length) for k, v in inner.items()}
        return Sequence(inner, length=length)
    raise ValueError(f"Unsupported feature type {kind!r} in feature description")


class Features(dict):
    """Ordered mapping column name -> feature, convertible to and from an Arrow schema."""

    @property
    def arrow_schema(self) -> pa.Schema:
        meta = {b"huggingface": json.dumps({"info": {"features": self.to_dict()}}).encode()}
        return pa.schema([pa.field(k, feature_to_arrow(v)) for k, v in self.items()], metadata=meta)

    @property
    def type(self) -> pa.StructType:
        return pa.struct([pa.field(k, feature_to_arrow(v)) for k, v in self.items()])

    def to_dict(self) -> dict[str, Any]:
        return {k: _feature_to_json(v) for k, v in self.items()}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Features":
        return cls({k: _feature_from_json(v) for k, v in obj.items()})

    @classmethod
    def from_arrow_schema(cls, schema: pa.Schema) -> "Features":
        """Features of a schema, using the stored feature description when there is one."""
        stored = features_from_metadata(schema)
        out = cls()
        for f in schema:
            if stored is not None and f.name in stored and feature_to_arrow(stored[f.name]) == f.type:
                out[f.name] = stored[f.name]
            else:
                out[f.name] = feature_from_arrow(f.type)
        return out

    def copy(self) -> "Features":
        return Features(self)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in self.items()) + "}"

    def encode_example(self, example: dict[str, Any]) -> dict[str, Any]:
        """Convert label names to ids for ClassLabel columns (other values pass through)."""
        return {k: encode_value(self.get(k), v) for k, v in example.items()}


def encode_value(feature: Any, value: Any) -> Any:
    """Encode one Python value for a feature (ClassLabel names become ids)."""
    if isinstance(feature, ClassLabel) and isinstance(value, str):
        return feature.str2int(value)
    if isinstance(feature, Sequence) and isinstance(value, (list, tuple)):
        return [encode_value(feature.feature, v) for v in value]
    if isinstance(feature, dict) and isinstance(value, dict):
        return {k: encode_value(feature.get(k), v) for k, v in value.items()}
    return value


def features_from_metadata(schema: pa.Schema) -> Features | None:
    """The feature description stored in an Arrow schema's ``huggingface`` metadata, if any."""
    meta = schema.metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return None
    try:
        info = json.loads(raw)
        feats = info.get("info", {}).get("features")
        return Features.from_dict(feats) if feats else None
    except (ValueError, KeyError, TypeError):
        return None
