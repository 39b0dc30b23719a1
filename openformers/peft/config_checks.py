"""Checks on adapter config values before they reach the layers: each field against the kind of its
default, and module-name regular expressions refused when they could backtrack catastrophically."""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

MAX_PATTERN_LENGTH = 1000


def check_pattern(pattern: object, what: str) -> str:
    """A module-name regular expression that matches in bounded time, or ``ValueError``.

    Python's ``re`` backtracks: a repeated group that itself holds a repetition or an
    alternation (``(a+)+``, ``(a|a)*``, ``(.*\\.)*``) can take time exponential in the module
    name's length. Such patterns are refused, naming the field; a list of module names, or a
    pattern without a quantifier inside a repeated group, says the same thing.
    """
    import re

    if not isinstance(pattern, str):
        raise ValueError(f"{what} = {pattern!r} must be a string (a regular expression)")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"{what}: a pattern of {len(pattern)} characters is longer than the {MAX_PATTERN_LENGTH} allowed")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what} = {pattern!r} is not a valid regular expression: {exc}") from None
    sre_parse, _ = _sre_modules()
    if _backtracks(sre_parse.parse(pattern), repeated=False):
        raise ValueError(
            f"{what} = {pattern!r} repeats a group that itself holds a repetition or an alternation, which can "
            f"take exponential time to match (catastrophic backtracking); rewrite it without a quantifier inside "
            f"a repeated group, or pass a list of module names"
        )
    return pattern


# fields that hold module names: None, one regular expression, or a list of names
_NAME_LISTS = ("target_modules", "exclude_modules", "feedforward_modules", "layers_pattern")
_STRING_LISTS = ("modules_to_save",)
_PATTERN_DICTS = ("rank_pattern", "alpha_pattern")
_MAX_RANK = 1 << 16


def _check_field_types(config: Any) -> None:
    """Every field against the kind of its default (``ValueError`` naming it): a file's values
    must not reach the layers as sizes or names of another type."""
    import math

    where = type(config).__name__

    def bad(name: str, value: Any, kind: str) -> ValueError:
        return ValueError(f"{where}: {name} = {value!r} must be {kind}")

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value is None and isinstance(default, (bool, int, float, str)):
            raise bad(f.name, value, f"a value like its default {default!r}")
        if value is None or isinstance(value, enum.Enum):
            continue
        if f.name in _NAME_LISTS:
            if not isinstance(value, (str, list, set, tuple)) or (not isinstance(value, str) and not all(isinstance(v, str) for v in value)):
                raise bad(f.name, value, "a regular expression or a list of module names")
            continue
        if f.name in _STRING_LISTS:
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise bad(f.name, value, "a list of module names")
            continue
        if f.name == "rank_pattern" and getattr(config, "_peft_type", None) == "ADALORA":  # PeftType.ADALORA (a str enum)
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, list) and all(type(b) is bool for b in v) for k, v in value.items()):
                raise bad(f.name, value, "an object mapping parameter names to lists of true/false (kept ranks)")
            continue
        if f.name in _PATTERN_DICTS:
            rank = f.name == "rank_pattern"
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and (type(v) is int and 1 <= v <= _MAX_RANK if rank else type(v) in (int, float) and math.isfinite(v))
                    for k, v in value.items()):
                kind = f"ranks (integers from 1 to {_MAX_RANK})" if rank else "finite numbers"
                raise bad(f.name, value, f"an object mapping module-name patterns to {kind}")
            continue
        if f.name == "layers_to_transform":
            items = [value] if isinstance(value, int) else value
            if not isinstance(items, list) or not all(type(v) is int and v >= 0 for v in items):
                raise bad(f.name, value, "a layer index or a list of layer indices")
            continue
        if f.name in ("peft_type", "task_type"):
            if not isinstance(value, str):
                raise bad(f.name, value, "a string")
            continue
        if isinstance(default, bool):
            if type(value) is not bool and not (f.name in ("init_lora_weights", "init_weights") and isinstance(value, str)):
                raise bad(f.name, value, "true or false")
        elif isinstance(default, (int, float)):
            if type(value) not in (int, float) or not math.isfinite(value) or abs(value) > _MAX_RANK * 1e6:
                raise bad(f.name, value, "a finite number")
        elif isinstance(default, str) and not isinstance(value, str):
            raise bad(f.name, value, "a string")
    r = getattr(config, "r", None)
    if type(r) is int and r > _MAX_RANK:
        raise bad("r", r, f"at most {_MAX_RANK}")


def _sre_modules() -> tuple[Any, Any]:
    """The parser and constants ``re`` itself uses (``re._parser`` from Python 3.11, ``sre_parse`` before)."""
    try:
        from re import _constants, _parser
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_constants as _constants
        import sre_parse as _parser
    return _parser, _constants


def _backtracks(items: Any, repeated: bool) -> bool:
    """True when a repetition of unbounded count (or over 1) holds a repetition or an alternation."""
    _, c = _sre_modules()

    for op, arg in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)):
            low, high, body = arg
            many = high is c.MAXREPEAT or high > 1
            if many and repeated:
                return True
            if _backtracks(body, repeated or (many and op != getattr(c, "POSSESSIVE_REPEAT", None))):
                return True
        elif op == c.BRANCH:
            if repeated:
                return True
            if any(_backtracks(alt, repeated) for alt in arg[1]):
                return True
        elif op == c.SUBPATTERN:
            if _backtracks(arg[-1], repeated):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if _backtracks(arg[1], repeated):
                return True
    return False
