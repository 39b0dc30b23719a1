"""The process's memory: its size limit, and keeping freed host memory for reuse (glibc's malloc).

PyTorch takes CPU tensor memory from the C library's ``malloc``. glibc serves allocations above
its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh mmap'd pages and returns freed
memory above its trim threshold to the system. Training and inference free and reallocate the
same large buffers every step (activations, logits, the gradients that
``zero_grad(set_to_none=True)`` drops: BERT-base's dense word-embedding gradient alone is 90 MB),
so each step pays a page fault for every 4 KiB of them again. On the 2-core machine of
``benchmarks/RESULTS.md`` a product into a fresh [8, 64, 1536] float32 tensor took 0.92 ms that
way against 0.11 ms into reused memory, a fresh 100 MB one 48 ms against 17 ms.

Two scopes:

* :func:`reuse_freed_memory_process_wide`, called when the first model is built: blocks up to
  :func:`kept_bytes` (a sixteenth of the memory limit, at most 1 GiB) come from the heap, and up
  to that much freed memory at the heap's top stays with the process, like the caching
  allocators of the GPU backends. This covers a user's own training loop, evaluation and
  generation: a LoRA step of SmolLM2 in a plain loop was 1.23x faster (one process, alternating).
* :func:`reuse_freed_memory`, a context the Trainer holds for the span of ``train()``:
  ``M_MMAP_MAX=0`` (no mmap'd chunks: large buffers of any size come from the heap) and a 2 GiB
  trim threshold. On exit it restores the settings it found (the process-wide ones, or glibc's
  documented defaults) and hands the free memory back with ``malloc_trim(0)``. Peak memory stays
  about the same (the same buffers, reused instead of re-faulted: within 2% either way for
  MiniLM, SmolLM2 and SmolLM2 + LoRA fine-tunes).

Left alone: other C libraries, and processes whose allocator the user already chose (any
``MALLOC_*`` variable, ``GLIBC_TUNABLES``, or jemalloc/tcmalloc/mimalloc in ``LD_PRELOAD``); set
``OPENFORMERS_REUSE_FREED_MEMORY=0`` (or ``false``, ``no``, ``off``) to turn both off.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
from typing import Iterator

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536
KEEP_UP_TO = 2**31 - 1  # bytes of free memory kept at the heap's top inside reuse_freed_memory (the C int's limit)
PROCESS_WIDE_MAX = 1 << 30

_lock = threading.Lock()
_depth = 0
_process_wide: int | None = None  # the thresholds set by reuse_freed_memory_process_wide, once applied


def memory_limit() -> int:
    """The machine's memory, or the container's limit (cgroup v2 or v1) when lower; 0 when unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total == 0 or 0 < int(text) < total):
            total = int(text)
    return total


def kept_bytes() -> int:
    """The process-wide thresholds: a sixteenth of :func:`memory_limit`, at most 1 GiB (64 MiB when unknown)."""
    limit = memory_limit()
    return min(PROCESS_WIDE_MAX, limit // 16) if limit else 64 << 20


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def allocator_chosen_by_user(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OPENFORMERS_REUSE_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return True
    if any(key.startswith("MALLOC_") for key in env) or "malloc" in env.get("GLIBC_TUNABLES", ""):
        return True
    preload = env.get("LD_PRELOAD", "")
    return any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc"))


def reuse_freed_memory_process_wide() -> bool:
    """Apply the process-wide settings of the module docstring (once; later calls only report).
    True when they are in effect."""
    global _process_wide
    with _lock:
        if _process_wide is not None:
            return _process_wide > 0
        libc = None if allocator_chosen_by_user() else _glibc()
        size = kept_bytes()
        ok = libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, size))
        if ok and _depth == 0:  # inside reuse_freed_memory the trim threshold is set on its exit
            ok = bool(libc.mallopt(M_TRIM_THRESHOLD, size))
        _process_wide = size if ok else 0
        return ok


def _restore(libc: ctypes.CDLL) -> None:
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, _process_wide or DEFAULT_TRIM_THRESHOLD)


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within: glibc keeps freed memory for reuse (see the module docstring). Yields whether it does.
    Nested uses are fine: the outermost restores the settings it found."""
    global _depth
    libc = _glibc() if enabled and not allocator_chosen_by_user() else None
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0 and not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO)):
            _restore(libc)
            libc = None
        else:
            _depth += 1
    if libc is None:
        yield False
        return
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _restore(libc)
                libc.malloc_trim(0)
