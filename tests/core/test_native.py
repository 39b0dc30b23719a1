"""core/native.py: building, caching, logging and reporting C kernels, and the struct check."""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import pytest

from openformers.core import native

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")

STRUCT_C = r"""
#include <stddef.h>
#include <stdint.h>

struct of_pair { int8_t tag; int64_t count; double scale; };

size_t of_struct_size_of_pair(void) { return sizeof(struct of_pair); }
size_t of_struct_offset_of_pair_tag(void) { return offsetof(struct of_pair, tag); }
size_t of_struct_offset_of_pair_count(void) { return offsetof(struct of_pair, count); }
size_t of_struct_offset_of_pair_scale(void) { return offsetof(struct of_pair, scale); }

double of_scaled(const struct of_pair *p) { return p->count * p->scale; }
"""


def _setup(lib: ctypes.CDLL) -> None:
    lib.of_scaled.restype = ctypes.c_double


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("OPENFORMERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENFORMERS_NATIVE", "1")
    return tmp_path / "cache" / "native"


def _source(tmp_path: Path, text: str = STRUCT_C, name: str = "pair_native.c") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@needs_compiler
def test_struct_check_passes_and_fails_with_the_field(cache, tmp_path) -> None:
    class Pair(ctypes.Structure):
        _fields_ = [("tag", ctypes.c_int8), ("count", ctypes.c_int64), ("scale", ctypes.c_double)]

    class Narrow(ctypes.Structure):  # count declared 32-bit: count and scale land early
        _fields_ = [("tag", ctypes.c_int8), ("count", ctypes.c_int32), ("scale", ctypes.c_double)]

    class Extra(ctypes.Structure):
        _fields_ = [("tag", ctypes.c_int8), ("count", ctypes.c_int64), ("scale", ctypes.c_double),
                    ("bias", ctypes.c_double)]

    lib = native.NativeLibrary(_source(tmp_path), _setup)
    lib.check_struct("of_pair", Pair)
    assert lib.get().of_scaled(ctypes.byref(Pair(1, 3, 0.5))) == 1.5
    with pytest.raises(native.StructMismatchError, match=r"Narrow does not match struct of_pair of pair_native.c.*"
                                                          r"size: C 24 bytes, ctypes 16; count: offset C 8, ctypes 4; "
                                                          r"scale: offset C 16, ctypes 8"):
        lib.check_struct("of_pair", Narrow)
    with pytest.raises(native.StructMismatchError, match=r"size: C 24 bytes, ctypes 32; bias: the library exports "
                                                          r"no of_struct_offset_of_pair_bias\(\)"):
        lib.check_struct("of_pair", Extra)
    with pytest.raises(native.StructMismatchError, match=r"exports no of_struct_size_of_other\(\)"):
        lib.check_struct("of_other", Pair)


@needs_compiler
def test_first_compile_logs_one_line_then_the_cache_is_used(cache, tmp_path, caplog) -> None:
    source = _source(tmp_path)
    first = native.NativeLibrary(source, _setup)
    assert first.state() == ("not built", str(native.target(source)))
    with caplog.at_level(logging.INFO, logger="openformers.native"):
        assert first.get() is not None and first.get() is not None
    lines = [r for r in caplog.records if r.name == "openformers.native"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING  # shown by default
    message = lines[0].getMessage()
    assert "pair_native.c" in message and str(cache) in message and " s " in message
    assert first.state() == ("loaded", str(first.path)) and first.path.parent == cache

    caplog.clear()
    second = native.NativeLibrary(source, _setup)
    assert second.state() == ("built", str(first.path))
    with caplog.at_level(logging.INFO, logger="openformers.native"):
        assert second.get() is not None
    assert not [r for r in caplog.records if r.name == "openformers.native"]
    assert first in native.libraries() and second in native.libraries()


COMPILE_SCRIPT = """
import ctypes, sys
from pathlib import Path
from openformers.core import native
if sys.argv[2] == "quiet":
    import openformers.utils.logging
    openformers.utils.logging.set_verbosity_error()
native.NativeLibrary(Path(sys.argv[1]), lambda lib: None).get()
native.NativeLibrary(Path(sys.argv[1]), lambda lib: None).get()
"""


@needs_compiler
@pytest.mark.parametrize("verbosity", ["default", "quiet"])
def test_first_compile_prints_one_line_on_stderr_by_default(tmp_path, verbosity) -> None:
    import os
    import subprocess
    import sys

    source = _source(tmp_path)
    env = {**os.environ, "OPENFORMERS_CACHE": str(tmp_path / "cache"), "OPENFORMERS_NATIVE": "1",
           "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, str(source), verbosity], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "pair_native.c" in line]
    if verbosity == "quiet":  # set_verbosity_error() silences it
        assert lines == [], out.stderr
    else:
        assert len(lines) == 1 and "compiled the native kernel pair_native.c once in" in lines[0], out.stderr


@needs_compiler
def test_a_failed_compile_is_logged_once_with_the_reason(cache, tmp_path, caplog) -> None:
    broken = native.NativeLibrary(_source(tmp_path, "int of_broken(void) { return missing_name; }\n", "broken.c"),
                                  lambda lib: None, fallback="the PyTorch path")
    with caplog.at_level(logging.INFO, logger="openformers.native"):
        assert broken.get() is None and broken.get() is None
    lines = [r for r in caplog.records if r.name == "openformers.native"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    message = lines[0].getMessage()
    assert "broken.c" in message and "the PyTorch path run instead" in message and "missing_name" in message
    state, why = broken.state()
    assert state == "failed" and "missing_name" in why and why == broken.error
    broken.reset()
    assert broken.state()[0] == "not built"


def test_disabled_missing_source_and_no_compiler(cache, tmp_path, monkeypatch, caplog) -> None:
    lib = native.NativeLibrary(tmp_path / "gone.c", _setup)
    monkeypatch.setenv("OPENFORMERS_NATIVE", "0")
    assert lib.get() is None and lib.state() == ("disabled", "OPENFORMERS_NATIVE=0")
    monkeypatch.setenv("OPENFORMERS_NATIVE", "1")
    if native.compiler() is not None:
        state, why = lib.state()
        assert state == "not built" and "gone.c is missing" in why
        with caplog.at_level(logging.INFO, logger="openformers.native"):
            assert lib.get() is None and "package data" in lib.error
        assert [r.levelno for r in caplog.records if r.name == "openformers.native"] == [logging.WARNING]
        caplog.clear()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    plain = native.NativeLibrary(_source(tmp_path), _setup)
    assert plain.state() == ("not built", "no C compiler found (set CC, or install gcc): pair_native.c is not built")
    with caplog.at_level(logging.INFO, logger="openformers.native"):
        assert plain.get() is None and plain.state()[0] == "failed"
    (line,) = [r for r in caplog.records if r.name == "openformers.native"]
    assert line.levelno == logging.INFO and "no C compiler found" in line.getMessage()  # an expected set-up: no warning
    with pytest.raises(RuntimeError, match="not loaded \\(no C compiler found"):
        plain.check_struct("of_pair", ctypes.Structure)


@needs_compiler
@pytest.mark.parametrize("module, attribute", [("openformers.modules.dropout", "_LIBRARY"),
                                                ("openformers.modules.rotary_native", "_LIBRARY"),
                                                ("openformers.modules.swiglu_native", "_LIBRARY"),
                                                ("openformers.runtime.attention_native", "_LIBRARY")])
def test_the_package_kernels_are_registered_and_load(module, attribute) -> None:
    import importlib

    lib = getattr(importlib.import_module(module), attribute)
    assert lib in native.libraries()
    assert lib.get() is not None, lib.error
    assert lib.state()[0] == "loaded"
