"""Every ``OPENFORMERS_*`` environment variable, declared once and parsed one way.

Each variable is a :class:`Setting` in :data:`SETTINGS` (name, kind, default, one line of help).
:func:`get` parses a variable the first time it is asked for and keeps the value for the rest of the
process, so a switch means the same thing in every part of the library however often it is read.
Code that changes ``os.environ`` after that (a test, a notebook) calls :func:`reload` to read the
environment again; the test suite's ``monkeypatch`` fixture does so after each ``setenv`` and
``delenv`` of an ``OPENFORMERS_*`` name.

Parsing: a switch takes ``1/0``, ``true/false``, ``yes/no`` or ``on/off`` (any case); a path has ``~``
expanded; a size is a number. An empty value counts as unset. Anything else raises ``ValueError``
naming the variable and the values it takes.

``python -m openformers.core.settings`` prints the README's table of them.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    """One variable: ``kind`` is "switch" (True/False), "auto-switch" (True/False, None when unset:
    the library decides), "path", "megabytes" or "secret" (a string never printed); ``default`` is the value when unset;
    ``default_doc`` how the README states it."""

    name: str
    kind: str
    default: Any
    doc: str
    default_doc: str = ""

    def parse(self, raw: str | None) -> Any:
        """The value of this variable when the environment holds ``raw`` (None: unset)."""
        value = None if raw is None else raw.strip()
        if not value:
            return self.default() if callable(self.default) else self.default
        if self.kind in ("switch", "auto-switch"):
            if value.lower() in TRUE:
                return True
            if value.lower() in FALSE:
                return False
            raise ValueError(f"{self.name}={raw!r} is not a true/false value: set it to 1/0, true/false, yes/no or "
                             "on/off" + (", or unset it to let the library decide" if self.kind == "auto-switch" else ""))
        if self.kind == "path":
            return Path(value).expanduser()
        if self.kind == "secret":
            return value
        if self.kind == "megabytes":
            try:
                megabytes = float(value)
            except ValueError:
                raise ValueError(f"{self.name}={raw!r} is not a number of megabytes; set it to one or unset it") from None
            return max(megabytes, 0.0)
        raise AssertionError(f"unknown kind {self.kind!r} of {self.name}")


def _cache_root() -> Path:
    return Path.home() / ".cache" / "openformers"


SETTINGS: tuple[Setting, ...] = (
    Setting("OPENFORMERS_CACHE", "path", _cache_root,
            "Root of openformers' own caches: compiled native kernels go to `<root>/native`, datasets to "
            "`<root>/datasets` unless `OPENFORMERS_DATA_CACHE` is set.", "`~/.cache/openformers`"),
    Setting("OPENFORMERS_DATA_CACHE", "path", lambda: get("OPENFORMERS_CACHE") / "datasets",
            "Where `load_dataset` and `Dataset.map` write their Arrow cache files.", "`$OPENFORMERS_CACHE/datasets`"),
    Setting("OPENFORMERS_HUB", "path", None,
            "A local hub directory: `push_to_hub` writes there and `from_pretrained` looks there first.",
            "unset (the Hugging Face cache)"),
    Setting("OPENFORMERS_OFFLINE", "switch", False,
            "No network call at all, like `HF_HUB_OFFLINE=1`: models and tokenizers come from local files and the cache.",
            "`0`"),
    Setting("OPENFORMERS_NATIVE", "switch", True,
            "Build and use the C kernels (4-bit products and decode step, training kernels); `0`: PyTorch's "
            "operators everywhere.", "`1`"),
    Setting("OPENFORMERS_ONEDNN_LINEAR", "auto-switch", None,
            "Float32 training products through oneDNN: `1` always, `0` never (plain `F.linear`).",
            "unset (oneDNN unless the CPU is Intel's and the BLAS is MKL)"),
    Setting("OPENFORMERS_PACKED_WEIGHTS", "switch", True,
            "Keep inference copies of weights in oneDNN's blocked layout for small-batch products; `0`: none.",
            "`1`"),
    Setting("OPENFORMERS_PACKED_WEIGHTS_MAX_MB", "megabytes", None,
            "Memory budget of the packed weight copies and merged LoRA weights, in MB (`0`: none).",
            "unset (a quarter of the machine's or the container's memory)"),
    Setting("OPENFORMERS_REUSE_FREED_MEMORY", "switch", True,
            "While `Trainer.train()` runs on CPU, glibc keeps freed memory for reuse instead of returning it; "
            "`0`: glibc's defaults.", "`1`"),
    Setting("OPENFORMERS_API_KEY", "secret", None,
            "API key `openformers serve` requires as `Authorization: Bearer KEY` (its `--api-key` default); unset: open.",
            "unset"),
    Setting("OPENFORMERS_HUB_TOKEN", "secret", None,
            "Token that `openformers hub serve` requires for uploads (its `--token` default); unset: read-only.",
            "unset"),
    Setting("OPENFORMERS_HUB_MAX_UPLOAD_MB", "megabytes", 4096.0,
            "Largest upload request `openformers hub serve` accepts, in MB.", "`4096`"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

_values: dict[str, Any] = {}
_lock = threading.Lock()


def _setting(name: str) -> Setting:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not an openformers setting; the settings are: {', '.join(BY_NAME)}") from None


def get(name: str) -> Any:
    """The value of the variable ``name``, read from the environment once per process (see :func:`reload`)."""
    try:
        return _values[name]
    except KeyError:
        pass
    value = _setting(name).parse(os.environ.get(name))
    with _lock:
        return _values.setdefault(name, value)


def parse(name: str, environ: Mapping[str, str]) -> Any:
    """The value ``name`` would have with the environment ``environ`` (nothing is cached)."""
    return _setting(name).parse(environ.get(name))


def reload() -> None:
    """Forget the values read so far: the next :func:`get` of each variable reads the environment again.

    Call it after changing ``os.environ`` in a running process. Values that a module computed from a
    setting when it was imported (the oneDNN choice of ``modules/dense.py``) are not recomputed."""
    with _lock:
        _values.clear()


def in_effect() -> dict[str, dict[str, Any]]:
    """Each variable's value, whether it was set in the environment, and the raw text there."""
    out = {}
    for s in SETTINGS:
        raw = os.environ.get(s.name)
        try:
            value: Any = get(s.name)
        except ValueError as err:
            value = f"invalid: {err}"
        if s.kind == "secret" and raw:
            value = raw = "***"
        out[s.name] = {"value": value, "set": bool(raw and raw.strip()), "raw": raw}
    return out


def markdown_table() -> str:
    """The README's table: name, default, what it does."""
    rows = ["| Variable | Default | What it does |", "| --- | --- | --- |"]
    rows += [f"| `{s.name}` | {s.default_doc} | {s.doc} |" for s in SETTINGS]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
