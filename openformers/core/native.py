"""Native kernels in C: compiled on first use with the system compiler and loaded with ``ctypes``.

A kernel's C file sits beside the Python module that calls it (``runtime/int4_native.c``,
``modules/dropout_native.c``) and ships in the wheel as package data. :class:`NativeLibrary` compiles
it once (``-O3 -march=native -fopenmp``; ``$CC``, else ``cc`` or ``gcc``) into
``$OPENFORMERS_CACHE/native`` (default ``~/.cache/openformers/native``), keyed by a hash of the
source, the CPU, the flags and the compiler's version, and loads it. The libraries' OpenMP threads
are PyTorch's: torch is imported first, so its ``libgomp.so.1`` is the one they bind to, and the
kernels and PyTorch's operators share one pool of threads.

Where there is no compiler, the build fails, or ``OPENFORMERS_NATIVE=0`` is set, ``get()`` returns
None and callers use PyTorch's operators. A compile is logged once on the ``openformers.native``
logger as a WARNING, so that a user sees by default, on stderr, the one pause it makes (the time and the
cached file; ``openformers.utils.logging.set_verbosity_error()`` silences it); a failure is a WARNING
with the compiler's message and what runs instead (INFO where there is no compiler at all). The reason of a failure is kept in
``error``, and the build is tried again only after :meth:`NativeLibrary.reset`. Every library registers itself: :func:`libraries` and
:meth:`NativeLibrary.state` are what ``openformers env`` reports.

A C struct mirrored by a ``ctypes.Structure`` is checked with :meth:`NativeLibrary.check_struct`
against sizes and offsets the library exports (``of_struct_size_<name>``,
``of_struct_offset_<name>_<field>``), so a mismatch fails a test instead of corrupting memory.
"""
from __future__ import annotations

import ctypes
import hashlib
import itertools
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Callable

import torch  # loaded first: the libraries bind to PyTorch's OpenMP runtime

from openformers.core import settings

logger = logging.getLogger("openformers.native")

FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")


def compiler() -> str | None:
    """The C compiler's path: ``$CC``, else ``cc`` or ``gcc``; None where there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpuinfo(*keys: str) -> list[str] | None:
    """The distinct lines of /proc/cpuinfo that start with one of ``keys``, sorted; None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return sorted({line for line in f.read().splitlines() if line.startswith(keys)})
    except OSError:
        return None


def cpu() -> str:
    """The CPU's model and feature flags (Linux), else the platform's processor name."""
    lines = _cpuinfo("model name", "flags")
    return platform.processor() if lines is None else "\n".join(lines)


def cpu_vendor() -> str:
    """The CPU's ``vendor_id`` (Linux: "GenuineIntel", "AuthenticAMD", ...), else ""."""
    lines = _cpuinfo("vendor_id")
    return lines[0].split(":", 1)[1].strip() if lines else ""


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$OPENFORMERS_CACHE/native``."""
    return settings.get("OPENFORMERS_CACHE") / "native"


def enabled() -> bool:
    """``OPENFORMERS_NATIVE`` (on unless set to a false value)."""
    return settings.get("OPENFORMERS_NATIVE")


_versions: dict[str, str] = {}


class NoCompilerError(RuntimeError):
    """There is no C compiler: the kernels cannot be built (an expected set-up, logged at INFO)."""


def compiler_version(cc: str) -> str:
    """``cc --version``'s output (asked once per process)."""
    if cc not in _versions:
        _versions[cc] = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return _versions[cc]


def target(source: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    """The path of ``source``'s library in the cache for these flags, this compiler and this CPU
    (present or not). Raises ``RuntimeError`` when there is no compiler or no source."""
    cc = compiler()
    if cc is None:
        raise NoCompilerError(f"no C compiler found (set CC, or install gcc): {source.name} is not built")
    if not source.is_file():
        raise RuntimeError(f"the kernel's C source {source} is missing: the package was installed without its "
                           "package data (reinstall openformers from a wheel or a source checkout)")
    flags = FLAGS + tuple(extra_flags)
    # -march=native: a library built on one CPU may not run on another that shares the cache directory
    key = hashlib.sha256(source.read_bytes() + repr((flags, compiler_version(cc), cpu())).encode()).hexdigest()[:16]
    return cache_dir() / f"{source.stem}-{key}.so"


def build(source: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` (once per source, flags, compiler and CPU) and return the library's path.
    A compile logs one WARNING line, shown by default (the file, the time, where the library is cached).

    Raises ``RuntimeError`` with the compiler's message when there is no compiler or the build fails.
    """
    path = target(source, extra_flags)
    if path.exists():
        return path
    cc = compiler()
    flags = FLAGS + tuple(extra_flags)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        done = subprocess.run([cc, *flags, str(source), "-o", str(out), "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {source.name} with {cc} failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(out, path)  # atomic: a concurrent build or reader never sees half a file
    logger.warning("compiled the native kernel %s once in %.1f s (%s); cached at %s", source.name,
                time.perf_counter() - start, " ".join(extra_flags) or "default flags", path)
    return path


class StructMismatchError(RuntimeError):
    """A ``ctypes.Structure`` does not match the C struct it mirrors (size or field offsets)."""


_registry: "weakref.WeakValueDictionary[int, NativeLibrary]" = weakref.WeakValueDictionary()
_order = itertools.count()


def libraries() -> list["NativeLibrary"]:
    """Every :class:`NativeLibrary` made in this process (those of the modules imported so far), in order."""
    return [lib for _, lib in sorted(_registry.items())]


class NativeLibrary:
    """One C file's library, built and loaded at the first :meth:`get`. ``setup(lib)`` sets the
    functions' ``argtypes`` and ``restype``; ``flags`` are added to :data:`FLAGS` for this file;
    ``fallback`` says what runs where the library cannot be had (logged with the reason); ``describe(lib)``,
    where given, says in a few words what the loaded build runs (:meth:`runs`, for ``openformers env``)."""

    def __init__(self, source: Path, setup: Callable[[ctypes.CDLL], None], flags: tuple[str, ...] = (),
                 fallback: str = "PyTorch's operators", describe: Callable[[ctypes.CDLL], str] | None = None) -> None:
        self.source, self.setup, self.flags, self.fallback = Path(source), setup, tuple(flags), fallback
        self.describe = describe
        self.error: str | None = None
        self.path: Path | None = None
        self._lib: ctypes.CDLL | None = None
        self._tried = False
        self._lock = threading.Lock()
        _registry[next(_order)] = self

    @property
    def name(self) -> str:
        return self.source.name

    def load(self, path: Path) -> ctypes.CDLL:
        """The library at ``path`` with its signatures set."""
        lib = ctypes.CDLL(str(path))
        self.setup(lib)
        return lib

    def build(self, extra_flags: tuple[str, ...] = ()) -> Path:
        return build(self.source, self.flags + tuple(extra_flags))

    def runs_here(self) -> bool:
        """Whether a native pass may replace PyTorch's operators in this call: eager (not traced by
        ``torch.compile``), CPU autocast off, and the library loaded."""
        return not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling() and self.get() is not None

    def get(self) -> ctypes.CDLL | None:
        """The loaded library, or None where it cannot be had (see the module docstring). The first
        failure is logged (a warning; INFO where there is no compiler) and kept in ``error``; later
        calls return None at once."""
        if not enabled():
            return None
        if self._tried:
            return self._lib
        with self._lock:
            if not self._tried:
                try:
                    path = self.build()
                    self._lib, self.path = self.load(path), path
                except (RuntimeError, OSError, AttributeError) as err:  # AttributeError: setup names a missing symbol
                    self.error = str(err)
                    logger.log(logging.INFO if isinstance(err, NoCompilerError) else logging.WARNING,
                               "native kernel %s is not available, %s run instead: %s", self.name, self.fallback,
                               self.error)
                self._tried = True
            return self._lib

    def runs(self) -> str | None:
        """What the loaded build runs (``describe``'s words), or None (not loaded, or nothing to say)."""
        return None if self._lib is None or self.describe is None else self.describe(self._lib)

    def reset(self) -> None:
        """Forget the outcome of the last :meth:`get` (after installing a compiler, say): the next one tries again."""
        with self._lock:
            self._lib, self.path, self.error, self._tried = None, None, None, False

    def state(self) -> tuple[str, str]:
        """(state, detail): "disabled" (``OPENFORMERS_NATIVE=0``), "loaded" (the library's path), "failed"
        (why), "built" (compiled in the cache, not loaded yet) or "not built" (where it would go, or why not)."""
        if not enabled():
            return "disabled", "OPENFORMERS_NATIVE=0"
        if self._lib is not None:
            return "loaded", str(self.path)
        if self.error is not None:
            return "failed", self.error
        try:
            path = target(self.source, self.flags)
        except RuntimeError as err:
            return "not built", str(err)
        return ("built", str(path)) if path.exists() else ("not built", str(path))

    def check_struct(self, name: str, struct: type[ctypes.Structure], lib: ctypes.CDLL | None = None) -> None:
        """Check ``struct`` against the C struct ``name``: the library (``lib``, else :meth:`get`'s) must
        export ``size_t of_struct_size_<name>(void)`` and, for each field of ``struct._fields_``,
        ``size_t of_struct_offset_<name>_<field>(void)``. Raises :class:`StructMismatchError` naming
        every size or offset that differs or is not exported."""
        lib = lib if lib is not None else self.get()
        if lib is None:
            raise RuntimeError(f"cannot check the struct {name} of {self.name}: the library is not loaded "
                               f"({self.error or 'OPENFORMERS_NATIVE=0'})")

        def exported(symbol: str) -> int | None:
            try:
                fn = getattr(lib, symbol)
            except AttributeError:
                return None
            fn.argtypes, fn.restype = [], ctypes.c_size_t
            return int(fn())

        problems = []
        size = exported(f"of_struct_size_{name}")
        if size is None:
            problems.append(f"the library exports no of_struct_size_{name}()")
        elif size != ctypes.sizeof(struct):
            problems.append(f"size: C {size} bytes, ctypes {ctypes.sizeof(struct)}")
        for field in struct._fields_:
            offset, ours = exported(f"of_struct_offset_{name}_{field[0]}"), getattr(struct, field[0]).offset
            if offset is None:
                problems.append(f"{field[0]}: the library exports no of_struct_offset_{name}_{field[0]}()")
            elif offset != ours:
                problems.append(f"{field[0]}: offset C {offset}, ctypes {ours}")
        if problems:
            raise StructMismatchError(f"{struct.__name__} does not match struct {name} of {self.name} "
                                      f"(make the ctypes fields follow the C declaration): " + "; ".join(problems))
