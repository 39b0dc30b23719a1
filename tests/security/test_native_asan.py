"""The native kernels built with AddressSanitizer (``-fsanitize=address``, through
``NativeLibrary.build``'s extra flags; the C sources are unchanged) and run on valid and crafted
inputs in a child process with ``libasan`` preloaded (Python itself is not built with it)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .memory import ROOT

pytestmark = pytest.mark.slow


def _libasan() -> str | None:
    from openformers.core.native import compiler

    cc = compiler()
    if cc is None:
        return None
    path = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not path or not os.path.isabs(path) or not os.path.exists(path):
        return None
    probe = subprocess.run([cc, "-fsanitize=address", "-x", "c", "-", "-o", os.devnull], input="int main(void){return 0;}",
                           capture_output=True, text=True)
    return path if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def asan_env():
    if not shutil.which("gcc") and not os.environ.get("CC"):
        pytest.skip("no C compiler")
    lib = _libasan()
    if lib is None:
        pytest.skip("the C compiler has no AddressSanitizer runtime")
    return {**os.environ, "LD_PRELOAD": lib, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
            "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "OPENFORMERS_NATIVE": "1"}


def _run(env: dict[str, str], *cases: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tests" / "security" / "asan_child.py"), *cases],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=540)


def test_sanitizer_catches_an_overflow(asan_env):
    proc = _run(asan_env, "canary")
    assert proc.returncode != 0 and "heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]


def test_kernels_run_clean_under_address_sanitizer(asan_env):
    # the 4-bit kernel's builds for CPUs without AVX-512 BF16 too, where this CPU runs them
    flags = open("/proc/cpuinfo").read()
    variants = [name for name, needs in (("int4:avx512f", (" avx512f", " avx512bw")), ("int4:avx2", (" avx2", " fma")))
                if all(f in flags for f in needs)]
    proc = _run(asan_env, "swiglu", "rotary", "dropout", "int4", *variants)
    assert proc.returncode == 0 and "ASAN-CHILD-OK" in proc.stdout, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert "AddressSanitizer" not in proc.stderr
