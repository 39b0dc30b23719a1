"""The process's memory: its size limit, and keeping freed tensor memory for reuse.

PyTorch takes CPU tensor memory from the C library's ``malloc``. glibc's defaults suit small
objects, not a training step that allocates and frees the same activation-sized tensors every
step: a block above the mmap threshold (128 KiB, rising to at most 32 MiB) gets fresh pages from
the kernel, and freed memory at the top of the heap beyond the trim threshold goes back to the
kernel, so the next step's tensors fault every 4 KiB page in again. On the 2-core machine of
``benchmarks/RESULTS.md`` a product into a fresh [8, 64, 1536] float32 tensor took 0.92 ms that
way against 0.11 ms into reused memory, a fresh 100 MB one 48 ms against 17 ms, and a LoRA step
of SmolLM2 was 1.23x faster with freed memory kept (one process, alternating steps).

:func:`keep_freed_memory` raises both thresholds once (glibc only), when the first model is
built: blocks up to the limit below come from the heap, and up to that much freed memory at the
top of the heap stays with the process for the next allocations, like the caching allocators of
the GPU backends. The limit is a sixteenth of the machine's memory (of the container's limit when
lower), at most 1 GiB. ``OPENFORMERS_KEEP_FREED_MEMORY=0`` (or ``false``, ``no``, ``off``) in the
environment leaves the C library's settings alone.
"""
from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MAX_KEPT = 1 << 30

_state: dict[str, object] = {"applied": None}


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
    """How much freed memory the process keeps (see the module docstring)."""
    limit = memory_limit()
    return min(_MAX_KEPT, limit // 16) if limit else 64 << 20


def keep_freed_memory() -> bool:
    """Apply the settings of the module docstring once; True when they are in effect."""
    if _state["applied"] is not None:
        return bool(_state["applied"])
    applied = False
    if (os.environ.get("OPENFORMERS_KEEP_FREED_MEMORY", "1").strip().lower() not in ("0", "false", "no", "off")
            and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            size = ctypes.c_int(kept_bytes()).value
            applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, size)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, size))
        except (OSError, AttributeError):
            applied = False
    _state["applied"] = applied
    return applied
