"""Datasets on Apache Arrow: ``Dataset``, ``DatasetDict``, ``load_dataset`` and friends.

Names are imported lazily so ``import openformers.data`` stays cheap (no pyarrow, no pandas).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Dataset": "arrow_dataset",
    "DatasetInfo": "info",
    "DatasetDict": "dataset_dict",
    "IterableDataset": "iterable",
    "IterableDatasetDict": "iterable",
    "load_dataset": "loading",
    "load_from_disk": "loading",
    "concatenate_datasets": "combine",
    "interleave_datasets": "combine",
    "Features": "features",
    "Value": "features",
    "ClassLabel": "features",
    "Sequence": "features",
    "List": "features",
    "KeyDataset": "key_dataset",
}
# the progress-bar switches live with the library's other bars
_UTILS = ("disable_progress_bars", "enable_progress_bars", "are_progress_bars_disabled")

__all__ = sorted(_EXPORTS) + list(_UTILS) + ["load_metric"]


def __getattr__(name: str) -> Any:
    if name == "load_metric":  # datasets' old metric loader, used by older tutorials
        from openformers.metrics import load_metric

        return load_metric
    if name in _UTILS:
        from openformers.utils import progress

        return getattr(progress, name)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'openformers.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
