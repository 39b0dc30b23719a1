"""``KeyDataset``: one column of a dataset as a sequence, to feed a pipeline."""
from __future__ import annotations

from typing import Any


class KeyDataset:
    """``KeyDataset(dataset, "text")[i] == dataset[i]["text"]``; works like a torch map-style Dataset."""

    def __init__(self, dataset: Any, key: str) -> None:
        names = getattr(dataset, "column_names", None)
        if names is not None and key not in names:
            raise KeyError(f"KeyDataset: column {key!r} not in the dataset. Current columns: {names}")
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i][self.key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        for row in self.dataset:
            yield row[self.key]
