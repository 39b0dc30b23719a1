"""The library's log verbosity, with the Hugging Face ``utils.logging`` functions.

Every openformers module logs under the ``openformers`` logger. By default it prints WARNING and
above to stderr through one handler of its own; ``set_verbosity_info()`` and friends change that
level, ``get_logger(__name__)`` gives a script a logger, and ``disable_progress_bar()`` turns the
library's tqdm bars off.
"""
from __future__ import annotations

import logging as _logging
import sys
import threading
from logging import CRITICAL, DEBUG, ERROR, FATAL, INFO, NOTSET, WARN, WARNING  # noqa: F401
from typing import Any

from openformers.utils import progress as _progress

_LIBRARY = "openformers"
_lock = threading.Lock()
_default_handler: _logging.Handler | None = None
_EXPLICIT_FORMAT = "[%(levelname)s|%(filename)s:%(lineno)s] %(asctime)s >> %(message)s"

log_levels = {"detail": DEBUG, "debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR, "critical": CRITICAL}


def _root() -> _logging.Logger:
    return _logging.getLogger(_LIBRARY)


def _configure() -> None:
    global _default_handler
    with _lock:
        if _default_handler is not None:
            return
        _default_handler = _logging.StreamHandler(sys.stderr)
        _default_handler.flush = sys.stderr.flush  # type: ignore[method-assign]
        root = _root()
        root.addHandler(_default_handler)
        if root.level == NOTSET:
            root.setLevel(WARNING)
        root.propagate = False


def get_logger(name: str | None = None) -> _logging.Logger:
    """A logger named ``name`` (default: the library's own); sets up the library's handler once."""
    _configure()
    return _logging.getLogger(name or _LIBRARY)


def get_verbosity() -> int:
    _configure()
    return _root().getEffectiveLevel()


def set_verbosity(verbosity: int) -> None:
    """Set the library logger's level (``openformers.utils.logging.INFO``, ...)."""
    _configure()
    _root().setLevel(verbosity)


def set_verbosity_debug() -> None:
    set_verbosity(DEBUG)


def set_verbosity_info() -> None:
    set_verbosity(INFO)


def set_verbosity_warning() -> None:
    set_verbosity(WARNING)


def set_verbosity_error() -> None:
    set_verbosity(ERROR)


def disable_default_handler() -> None:
    _configure()
    assert _default_handler is not None
    _root().removeHandler(_default_handler)


def enable_default_handler() -> None:
    _configure()
    assert _default_handler is not None
    if _default_handler not in _root().handlers:
        _root().addHandler(_default_handler)


def add_handler(handler: _logging.Handler) -> None:
    _configure()
    _root().addHandler(handler)


def remove_handler(handler: _logging.Handler) -> None:
    _configure()
    _root().removeHandler(handler)


def disable_propagation() -> None:
    _configure()
    _root().propagate = False


def enable_propagation() -> None:
    """Let records reach the root logger too (turn the default handler off to avoid double lines)."""
    _configure()
    _root().propagate = True


def enable_explicit_format() -> None:
    """``[LEVEL|file:line] time >> message`` on every handler of the library logger."""
    _configure()
    for handler in _root().handlers:
        handler.setFormatter(_logging.Formatter(_EXPLICIT_FORMAT))


def reset_format() -> None:
    _configure()
    for handler in _root().handlers:
        handler.setFormatter(None)  # type: ignore[arg-type]


def warning_advice(self: _logging.Logger, *args: Any, **kwargs: Any) -> None:
    """``logger.warning`` (kept for scripts that call the reference's helper)."""
    self.warning(*args, **kwargs)


def disable_progress_bar() -> None:
    """Turn off the library's progress bars (Dataset.map, load_dataset, training)."""
    _progress.disable_progress_bars()


def enable_progress_bar() -> None:
    _progress.enable_progress_bars()


def is_progress_bar_enabled() -> bool:
    return not _progress.are_progress_bars_disabled()


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """A tqdm bar that honours :func:`disable_progress_bar`."""
    return _progress.tqdm(*args, **kwargs)
