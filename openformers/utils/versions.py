"""``require_version("pkg>=x.y", hint)``: fail early, and clearly, when an installed package is too old.

The packages openformers stands in for (transformers, datasets, evaluate, peft, accelerate, trl)
are satisfied by openformers itself, at the release of each whose API it follows, so a script's
``require_version("datasets>=1.8.0")`` keeps passing after its imports are switched.
"""
from __future__ import annotations

import importlib.metadata
import operator
import re

from openformers.utils.compat import API_VERSIONS

_OPS = {"<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">=": operator.ge, ">": operator.gt}


def _parse(version: str) -> object:
    from packaging.version import Version

    return Version(version)


def _compare(name: str, have: str, op: str, want: str, requirement: str, hint: str) -> None:
    if not _OPS[op](_parse(have), _parse(want)):
        raise ImportError(f"{requirement} is required by this script, but {name}=={have} is installed.{hint}")


def require_version(requirement: str, hint: str | None = None) -> None:
    """Check ``requirement`` (``"name"``, ``"name>=1.2"``, ``"name>=1.2,<2"``, ``"python>=3.10"``)."""
    hint_text = f" {hint}" if hint else ""
    match = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", requirement)
    if not match:
        raise ValueError(f"require_version: cannot read the requirement {requirement!r} (expected e.g. 'datasets>=1.8.0')")
    name, spec = match.group(1), match.group(2).strip()
    wanted = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = re.match(r"^(<=|>=|==|!=|<|>)\s*(.+)$", part)
        if not m:
            raise ValueError(f"require_version: {requirement!r}: {part!r} is not an operator and a version")
        wanted.append((m.group(1), m.group(2)))
    base = name.split("[")[0].lower()
    if base == "python":
        import platform

        have = platform.python_version()
    elif base in API_VERSIONS:
        have = API_VERSIONS[base]
    else:
        try:
            have = importlib.metadata.version(base)
        except importlib.metadata.PackageNotFoundError:
            raise ImportError(f"The '{requirement}' distribution was not found and is required by this script.{hint_text}") from None
    for op, want in wanted:
        _compare(base, have, op, want, requirement, hint_text)


def require_version_core(requirement: str) -> None:
    require_version(requirement, "Try: pip install -U openformers")
