"""``DatasetDict``: named splits (``"train"``, ``"test"``, ...) that transform together."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


class DatasetDict(dict):
    """A dict of split name -> :class:`Dataset`; most Dataset transforms apply to every split."""

    def _apply(self, method: str, *args: Any, **kwargs: Any) -> "DatasetDict":
        return DatasetDict({k: getattr(v, method)(*args, **kwargs) for k, v in self.items()})

    def __repr__(self) -> str:
        body = ",\n".join(f"    {k}: " + repr(v).replace("\n", "\n    ") for k, v in self.items())
        return "DatasetDict({\n" + body + "\n})"

    @property
    def column_names(self) -> dict[str, list[str]]:
        return {k: v.column_names for k, v in self.items()}

    @property
    def num_rows(self) -> dict[str, int]:
        return {k: v.num_rows for k, v in self.items()}

    @property
    def num_columns(self) -> dict[str, int]:
        return {k: v.num_columns for k, v in self.items()}

    @property
    def shape(self) -> dict[str, tuple[int, int]]:
        return {k: v.shape for k, v in self.items()}

    @property
    def data(self) -> dict[str, Any]:
        return {k: v.data for k, v in self.items()}

    @property
    def cache_files(self) -> dict[str, list[dict[str, str]]]:
        return {k: v.cache_files for k, v in self.items()}

    def map(self, function: Callable | None = None, **kwargs: Any) -> "DatasetDict":
        """``Dataset.map`` on each split (``cache_file_names`` may give one file per split)."""
        names = kwargs.pop("cache_file_names", None) or {}
        return DatasetDict({k: v.map(function, cache_file_name=names.get(k), **kwargs) for k, v in self.items()})

    def filter(self, function: Callable | None = None, **kwargs: Any) -> "DatasetDict":
        names = kwargs.pop("cache_file_names", None) or {}
        return DatasetDict({k: v.filter(function, cache_file_name=names.get(k), **kwargs) for k, v in self.items()})

    def shuffle(self, seeds: int | dict[str, int | None] | None = None, seed: int | None = None,
                generators: dict[str, Any] | None = None, **kwargs: Any) -> "DatasetDict":
        if seed is not None and seeds is not None:
            raise ValueError("Pass either `seed` or `seeds` to DatasetDict.shuffle, not both")
        seeds = seed if seed is not None else seeds
        out = {}
        for k, v in self.items():
            s = seeds.get(k) if isinstance(seeds, dict) else seeds
            out[k] = v.shuffle(seed=s, generator=(generators or {}).get(k), **kwargs)
        return DatasetDict(out)

    def sort(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("sort", *args, **kwargs)

    def select_columns(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("select_columns", *args, **kwargs)

    def remove_columns(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("remove_columns", *args, **kwargs)

    def rename_column(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("rename_column", *args, **kwargs)

    def rename_columns(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("rename_columns", *args, **kwargs)

    def cast_column(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("cast_column", *args, **kwargs)

    def cast(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("cast", *args, **kwargs)

    def class_encode_column(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("class_encode_column", *args, **kwargs)

    def flatten(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("flatten", *args, **kwargs)

    def flatten_indices(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("flatten_indices", *args, **kwargs)

    def with_format(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("with_format", *args, **kwargs)

    def with_transform(self, *args: Any, **kwargs: Any) -> "DatasetDict":
        return self._apply("with_transform", *args, **kwargs)

    def set_format(self, *args: Any, **kwargs: Any) -> None:
        for v in self.values():
            v.set_format(*args, **kwargs)

    def reset_format(self) -> None:
        for v in self.values():
            v.reset_format()

    def set_transform(self, *args: Any, **kwargs: Any) -> None:
        for v in self.values():
            v.set_transform(*args, **kwargs)

    def unique(self, column: str) -> dict[str, list[Any]]:
        return {k: v.unique(column) for k, v in self.items()}

    def save_to_disk(self, dataset_dict_path: str | os.PathLike, max_shard_size: int | str | None = None,
                     num_shards: dict[str, int] | None = None, **kwargs: Any) -> None:
        """Save every split under ``dataset_dict_path/<split>`` plus ``dataset_dict.json``."""
        from .disk import save_dataset_dict

        save_dataset_dict(self, dataset_dict_path, num_shards=num_shards, max_shard_size=max_shard_size)

    @staticmethod
    def load_from_disk(dataset_dict_path: str | os.PathLike, keep_in_memory: bool | None = None,
                       **kwargs: Any) -> "DatasetDict":
        from .disk import load_from_disk

        dd = load_from_disk(dataset_dict_path, keep_in_memory=keep_in_memory)
        if not isinstance(dd, DatasetDict):
            raise ValueError(f"{dataset_dict_path} holds a single Dataset; use Dataset.load_from_disk")
        return dd

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str) and key not in self:
            raise KeyError(f"Split {key!r} not found; available splits: {list(self)}")
        return super().__getitem__(key)
