"""Fixed-size OpenMP thread teams while training on the CPU, so the numbers do not depend on the load.

PyTorch's CPU reductions split their work by OpenMP thread and add the per-thread partial sums:
LayerNorm's weight and bias gradients, for one, come out different in the last bits with one thread
than with two. The size of a team is ``torch.get_num_threads()`` unless the OpenMP runtime may
adjust it (``OMP_DYNAMIC=true``, or ``omp_set_dynamic(1)`` called by anything in the process): then
GNU OpenMP gives a parallel region fewer threads when the load average is high. A run trained on a
busy machine and its resumed continuation (or two runs of the same seed) then differ in the last
bits of every weight after a few steps. Measured on an AMD EPYC, 2 threads, load average ~25: with
``OMP_DYNAMIC=true`` LayerNorm's weight gradient equals the one-thread result, without it the
two-thread result.

:func:`static_thread_teams` turns the adjustment off for the span of ``train()`` (for the calling thread,
whose setting it is) and puts the
process's setting back afterwards. The OpenMP runtime is PyTorch's (the one its operators and the
native kernels bind to); where none is found it does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Iterator

_local = threading.local()  # the setting is the calling thread's (an OpenMP ICV), so is the nesting


def _openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime loaded with PyTorch (its symbols are global once torch is imported), else None."""
    import torch  # noqa: F401  (loads the runtime)

    try:
        lib = ctypes.CDLL(None)
        get, put = lib.omp_get_dynamic, lib.omp_set_dynamic
    except (OSError, AttributeError, TypeError):  # TypeError: no process-wide symbol table (Windows)
        return None
    get.argtypes, get.restype = [], ctypes.c_int
    put.argtypes, put.restype = [ctypes.c_int], None
    return lib


def dynamic_teams() -> bool | None:
    """Whether the OpenMP runtime may shrink thread teams (``omp_get_dynamic()``); None without one."""
    lib = _openmp()
    return None if lib is None else bool(lib.omp_get_dynamic())


@contextlib.contextmanager
def static_thread_teams(enabled: bool = True) -> Iterator[bool]:
    """Within: every OpenMP parallel region started from this thread gets ``torch.get_num_threads()``
    threads, whatever the load. Yields whether the setting had to be changed. Nested uses are fine."""
    lib = _openmp() if enabled else None
    if lib is None:
        yield False
        return
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        _local.saved = lib.omp_get_dynamic()
        if _local.saved:
            lib.omp_set_dynamic(0)
    _local.depth = depth + 1
    try:
        yield bool(_local.saved)
    finally:
        _local.depth -= 1
        if _local.depth == 0 and _local.saved:
            lib.omp_set_dynamic(_local.saved)
