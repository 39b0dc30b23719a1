"""One switch for every progress bar the library draws (``datasets.disable_progress_bars()``)."""
from __future__ import annotations

from typing import Any

_disabled = False


def disable_progress_bars() -> None:
    """Hide the library's tqdm bars (Dataset.map, load_dataset, ...)."""
    global _disabled
    _disabled = True


def enable_progress_bars() -> None:
    global _disabled
    _disabled = False


def are_progress_bars_disabled() -> bool:
    return _disabled


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm`` that is silent while bars are disabled (or when ``disable=True``)."""
    from tqdm.auto import tqdm as _tqdm

    kwargs["disable"] = bool(kwargs.get("disable")) or _disabled
    return _tqdm(*args, **kwargs)
