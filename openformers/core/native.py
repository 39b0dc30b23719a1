"""Native kernels in C: compiled on first use with the system compiler and loaded with ``ctypes``.

A kernel's C file sits beside the Python module that calls it (``quantization/int4_native.c``,
``modules/dropout_native.c``). :class:`NativeLibrary` compiles it once (``-O3 -march=native
-fopenmp``; ``$CC``, else ``cc`` or ``gcc``) into ``$OPENFORMERS_CACHE/native`` (default
``~/.cache/openformers/native``), keyed by a hash of the source, the CPU, the flags and the
compiler's version, and loads it. The libraries' OpenMP threads are PyTorch's: torch is imported
first, so its ``libgomp.so.1`` is the one they bind to, and the kernels and PyTorch's operators share
one pool of threads.

Where there is no compiler, the build fails, or ``OPENFORMERS_NATIVE=0`` is set, ``get()`` returns
None and callers use PyTorch's operators; the reason is kept in ``error``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable

import torch  # loaded first: the libraries bind to PyTorch's OpenMP runtime

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
    root = os.environ.get("OPENFORMERS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "openformers") / "native"


def enabled() -> bool:
    return os.environ.get("OPENFORMERS_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def build(source: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` (once per source, flags, compiler and CPU) and return the library's path.

    Raises ``RuntimeError`` with the compiler's message when there is no compiler or the build fails.
    """
    cc = compiler()
    if cc is None:
        raise RuntimeError(f"no C compiler found (set CC, or install gcc): {source.name} is not built")
    flags = FLAGS + tuple(extra_flags)
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    # -march=native: a library built on one CPU may not run on another that shares the cache directory
    key = hashlib.sha256(source.read_bytes() + repr((flags, version, cpu())).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        done = subprocess.run([cc, *flags, str(source), "-o", str(out), "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {source.name} with {cc} failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(out, target)  # atomic: a concurrent build or reader never sees half a file
    return target


class NativeLibrary:
    """One C file's library, built and loaded at the first :meth:`get`. ``setup(lib)`` sets the
    functions' ``argtypes`` and ``restype``; ``flags`` are added to :data:`FLAGS` for this file."""

    def __init__(self, source: Path, setup: Callable[[ctypes.CDLL], None], flags: tuple[str, ...] = ()) -> None:
        self.source, self.setup, self.flags = source, setup, tuple(flags)
        self.error: str | None = None
        self._lib: ctypes.CDLL | None = None
        self._tried = False
        self._lock = threading.Lock()

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
        """The loaded library, or None where it cannot be had (see the module docstring)."""
        if not enabled():
            return None
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    self._lib = self.load(self.build())
                except (RuntimeError, OSError) as err:
                    self.error = str(err)
            return self._lib
