"""Deterministic fingerprints of data, functions and arguments, used to name cache files.

A transform's result is cached under ``hash(dataset fingerprint, function, arguments)``. The
function hash covers:

- its bytecode, constants, default arguments and closure cells (their current values);
- the value of every global name it reads, recursively for the functions it calls;
- for a global or closure value that is a module or a class (``import settings`` then ``settings.OFFSET``, or
  ``Config.OFFSET``), the attributes of it that the code names, by value (again recursively,
  for ``pkg.sub.VALUE``); such an attribute with no stable hash (an open file, a lock) counts
  by its type only.

So editing the function, or a value it reads that way, gives a new cache file while re-running
the same code hits the cache. Not covered: what the function reaches only at run time (a
method of an object returning state that changes without changing the object's pickle, files
or environment variables it reads, random state, ``getattr`` with a computed name). When the
result depends on such things, pass ``load_from_cache_file=False`` (or ``new_fingerprint=``).
An object with no stable content hash makes the fingerprint random: that map is never cached.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import types
from typing import Any

import pyarrow as pa


class Unhashable(Exception):
    """Raised when an object has no stable content hash."""


def new_random_fingerprint() -> str:
    return os.urandom(8).hex()


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.blake2b(digest_size=16)
        self._seen: set[Any] = set()

    def update(self, obj: Any) -> None:
        self._feed(obj, depth=0)

    def hexdigest(self) -> str:
        return self.h.hexdigest()

    def _tag(self, tag: str) -> None:
        self.h.update(b"\x00" + tag.encode() + b"\x00")

    def _feed(self, obj: Any, depth: int) -> None:
        if depth > 50:
            raise Unhashable("object nesting too deep")
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            self._tag(type(obj).__name__)
            self.h.update(repr(obj).encode())
            return
        if isinstance(obj, (list, tuple)):
            self._tag(f"{type(obj).__name__}{len(obj)}")
            for x in obj:
                self._feed(x, depth + 1)
            return
        if isinstance(obj, (set, frozenset)):
            self._tag("set")
            for r in sorted(_stable_repr(x) for x in obj):
                self.h.update(r.encode())
            return
        if isinstance(obj, dict):
            self._tag(f"dict{len(obj)}")
            for k, v in obj.items():
                self._feed(k, depth + 1)
                self._feed(v, depth + 1)
            return
        if isinstance(obj, types.ModuleType):
            self._tag("module")
            self.h.update(obj.__name__.encode())
            return
        if isinstance(obj, types.CodeType):
            self._code(obj, depth)
            return
        if isinstance(obj, types.FunctionType):
            self._function(obj, depth)
            return
        if isinstance(obj, types.MethodType):
            self._tag("method")
            self._feed(obj.__func__, depth + 1)
            self._feed(obj.__self__, depth + 1)
            return
        if isinstance(obj, functools_partial_type()):
            self._tag("partial")
            self._feed(obj.func, depth + 1)
            self._feed(obj.args, depth + 1)
            self._feed(obj.keywords, depth + 1)
            return
        if isinstance(obj, (types.BuiltinFunctionType, type)):
            self._tag("qualname")
            self.h.update(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}".encode())
            return
        fp = getattr(obj, "_fingerprint", None)
        if isinstance(fp, str):  # datasets hash by their fingerprint, not their rows
            self._tag("fingerprint")
            self.h.update(fp.encode())
            return
        if isinstance(obj, (pa.Table, pa.RecordBatch)):
            self._tag("table")
            self.h.update(hash_table(obj).encode())
            return
        try:
            import numpy as np

            if isinstance(obj, np.ndarray):
                self._tag(f"ndarray{obj.dtype}{obj.shape}")
                self.h.update(np.ascontiguousarray(obj).tobytes())
                return
        except ImportError:  # pragma: no cover
            pass
        # Any other object: its pickle is its content (tokenizers, configs, callables with state).
        try:
            payload = pickle.dumps(obj, protocol=4)
        except Exception as err:  # noqa: BLE001 - any pickling failure means "no stable hash"
            raise Unhashable(f"cannot hash object of type {type(obj).__name__}: {err}") from None
        self._tag("pickle:" + type(obj).__qualname__)
        self.h.update(payload)

    def _code(self, code: types.CodeType, depth: int) -> None:
        self._tag("code")
        self.h.update(code.co_code)
        self.h.update(repr(code.co_names).encode())
        self.h.update(repr(code.co_varnames).encode())
        for c in code.co_consts:
            self._feed(c, depth + 1)

    def _function(self, fn: types.FunctionType, depth: int) -> None:
        self._tag("function")
        if id(fn) in self._seen:  # recursion: the name is enough
            self.h.update(fn.__qualname__.encode())
            return
        self._seen.add(id(fn))
        self._code(fn.__code__, depth)
        self._feed(fn.__defaults__, depth + 1)
        self._feed(fn.__kwdefaults__, depth + 1)
        names = _global_names(fn.__code__)
        if fn.__closure__:
            for cell in fn.__closure__:
                try:
                    value = cell.cell_contents
                except ValueError:  # empty cell
                    value = None
                self._feed(value, depth + 1)
                self._attributes(value, names, depth + 1)
        # Globals the code reads, so a changed helper or constant changes the hash.
        for name in names:
            if name in fn.__globals__:
                value = fn.__globals__[name]
                self._feed(name, depth + 1)
                self._feed(value, depth + 1)
                self._attributes(value, names, depth + 1)

    def _attributes(self, owner: Any, names: list[str], depth: int) -> None:
        """The attributes named in the code of a module or class the function reads as a global
        (``settings.OFFSET``): modules and classes themselves hash by name only."""
        if not isinstance(owner, (types.ModuleType, type)) or depth > 8 or ("attrs", id(owner)) in self._seen:
            return
        self._seen.add(("attrs", id(owner)))  # type: ignore[arg-type]
        space = vars(owner)
        for name in names:
            if name in space and not name.startswith("__"):
                value = space[name]
                self._tag("attr:" + name)
                if isinstance(value, (types.ModuleType, type)):
                    self._feed(value, depth + 1)
                    self._attributes(value, names, depth + 1)
                elif isinstance(value, (staticmethod, classmethod)):
                    self._feed(value.__func__, depth + 1)
                elif isinstance(value, types.FunctionType) or not hasattr(type(value), "__get__"):
                    try:  # a value pickled into a scratch hasher first: one that has no stable hash
                        scratch = _Hasher()  # (an open file, a lock) counts by its type, as before
                        scratch._feed(value, depth + 1)
                        self.h.update(scratch.h.digest())
                    except Unhashable:
                        self._tag("unhashable:" + type(value).__qualname__)


def functools_partial_type() -> type:
    import functools

    return functools.partial


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names.extend(_global_names(c))
    return sorted(set(names))


def _stable_repr(x: Any) -> str:
    h = _Hasher()
    h.update(x)
    return h.hexdigest()


def hash_objects(*objs: Any) -> str:
    """Content hash of Python objects; raises :class:`Unhashable` when there is none."""
    h = _Hasher()
    for o in objs:
        h.update(o)
    return h.hexdigest()[:16]


def hash_table(table: pa.Table | pa.RecordBatch) -> str:
    """Hash of an in-memory table's schema and buffers (fast: no conversion to Python)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(table.schema).encode())
    h.update(str(table.num_rows).encode())
    columns = table.columns
    for col in columns:
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        for chunk in chunks:
            h.update(f"{chunk.offset}:{len(chunk)}".encode())
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(memoryview(buf))
    return h.hexdigest()[:16]


def update_fingerprint(base: str, *parts: Any) -> str:
    """Fingerprint of a transform of ``base``; random (never a cache hit) if a part is unhashable."""
    try:
        return hash_objects(base, *parts)
    except Unhashable:
        return new_random_fingerprint()
