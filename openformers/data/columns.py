"""Column operations of ``Dataset`` (rename, remove, select, cast, flatten, add): a mixin.

They act on the underlying table and keep the indices mapping.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .conversion import attach_features, cast_array, table_from_columns
from .features import ClassLabel, Features, feature_to_arrow
from .fingerprint import update_fingerprint

if TYPE_CHECKING:  # pragma: no cover
    from .arrow_dataset import Dataset


def _check_columns(names: Iterable[str], available: list[str], arg: str) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"{arg}: column(s) {missing} not in the dataset. Current columns: {available}")
    return names


class ColumnOpsMixin:
    """Column operations mixed into :class:`~openformers.data.arrow_dataset.Dataset`."""

    def _with_table(self, table: pa.Table, features: Features, op: str, *args: Any) -> "Dataset":
        table = attach_features(table.replace_schema_metadata(None), features)
        return self._new(table, fingerprint=update_fingerprint(self._fingerprint, op, *args), features=features)

    def rename_column(self, original_column_name: str, new_column_name: str,
                      new_fingerprint: str | None = None) -> "Dataset":
        return self.rename_columns({original_column_name: new_column_name})

    def rename_columns(self, column_mapping: dict[str, str], new_fingerprint: str | None = None) -> "Dataset":
        """Rename columns; the new names must not clash with existing ones."""
        _check_columns(list(column_mapping), self.column_names, "rename_columns")
        new_names = [column_mapping.get(c, c) for c in self.column_names]
        if len(set(new_names)) != len(new_names):
            raise ValueError(f"rename_columns would give duplicate column names: {new_names}")
        if any(not n for n in new_names):
            raise ValueError("rename_columns: new column names must be non-empty strings")
        feats = Features({column_mapping.get(k, k): v for k, v in self.features.items()})
        out = self._with_table(self._data.rename_columns(new_names), feats, "rename", column_mapping)
        if self._format_columns is not None:
            out._format_columns = [column_mapping.get(c, c) for c in self._format_columns]
        return out

    def remove_columns(self, column_names: str | list[str], new_fingerprint: str | None = None) -> "Dataset":
        cols = _check_columns(column_names, self.column_names, "remove_columns")
        feats = Features({k: v for k, v in self.features.items() if k not in cols})
        return self._with_table(self._data.drop(cols), feats, "remove_columns", cols)

    def select_columns(self, column_names: str | list[str], new_fingerprint: str | None = None) -> "Dataset":
        cols = _check_columns(column_names, self.column_names, "select_columns")
        feats = Features({k: self.features[k] for k in cols})
        return self._with_table(self._data.select(cols), feats, "select_columns", cols)

    def cast_column(self, column: str, feature: Any, new_fingerprint: str | None = None) -> "Dataset":
        """Cast one column to ``feature`` (strings -> ClassLabel maps names to ids)."""
        _check_columns(column, self.column_names, "cast_column")
        feats = self.features.copy()
        feats[column] = feature
        return self.cast(feats)

    def cast(self, features: Features, **kwargs: Any) -> "Dataset":
        """Cast all columns to ``features`` (same column names)."""
        features = Features(features)
        if sorted(features) != sorted(self.column_names):
            raise ValueError(f"cast: features {list(features)} must name exactly the columns {self.column_names}")
        arrays = []
        for name in self.column_names:
            arrays.append(cast_array(name, self._data.column(name), features[name]))
        feats = Features({k: features[k] for k in self.column_names})
        table = pa.Table.from_arrays(arrays, names=self.column_names)
        return self._with_table(table, feats, "cast", feats.to_dict())

    def class_encode_column(self, column: str, include_nulls: bool = False) -> "Dataset":
        """Turn a column of values into a ClassLabel column (names sorted)."""
        _check_columns(column, self.column_names, "class_encode_column")
        col = self._data.column(column)
        names = sorted(str(v) for v in pc.unique(col).to_pylist() if v is not None)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = col.cast(pa.string())
        feats = self.features.copy()
        feats[column] = ClassLabel(names=names)
        arrays = [col if n == column else self._data.column(n) for n in self.column_names]
        table = pa.Table.from_arrays(arrays, names=self.column_names)
        return self._with_table(table, self.features, "tmp").cast(feats)

    def flatten(self, new_fingerprint: str | None = None, max_depth: int = 16) -> "Dataset":
        """Struct columns become ``parent.child`` columns."""
        table = self._data.replace_schema_metadata(None)
        for _ in range(max_depth):
            if not any(pa.types.is_struct(f.type) for f in table.schema):
                break
            table = table.flatten()
        stored = self.features
        feats = Features()
        for f in table.schema:
            node: Any = stored
            for part in f.name.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            feats[f.name] = node if node is not None and feature_to_arrow(node) == f.type else \
                Features.from_arrow_schema(pa.schema([f]))[f.name]
        return self._with_table(table, feats, "flatten")

    def add_column(self, name: str, column: list | np.ndarray, new_fingerprint: str | None = None,
                   feature: Any = None) -> "Dataset":
        """Add a column of ``len(self)`` values."""
        if name in self.column_names:
            raise ValueError(f"add_column: column {name!r} already exists; rename or remove it first")
        if len(column) != len(self):
            raise ValueError(f"add_column: column {name!r} has {len(column)} values, the dataset has {len(self)} rows")
        base = self.flatten_indices() if self._indices is not None else self
        new_tbl, new_feats = table_from_columns({name: column}, Features({name: feature}) if feature else None)
        table = base._data.append_column(name, new_tbl.column(name))
        feats = base.features.copy()
        feats[name] = new_feats[name]
        return base._with_table(table, feats, "add_column", name, new_tbl)

    def add_item(self, item: dict[str, Any], new_fingerprint: str | None = None) -> "Dataset":
        """Append one row."""
        from .arrow_dataset import Dataset
        from .combine import concatenate_datasets

        return concatenate_datasets([self, Dataset.from_list([item], features=self.features)])

    def unique(self, column: str) -> list[Any]:
        """Distinct values of a column, in order of first appearance."""
        _check_columns(column, self.column_names, "unique")
        col = self._full_table().column(column)
        return pc.unique(col).to_pylist()
