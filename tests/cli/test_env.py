"""``openformers env`` and ``openformers --version``."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import openformers
from openformers.cli import env
from openformers.core import native

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p.relative_to(ROOT / "openformers").as_posix() for p in (ROOT / "openformers").rglob("*.c"))


def _cli(*args: str, **env_vars: str) -> subprocess.CompletedProcess:
    # the caches follow HF_HOME when these are unset; the kernels are expected on
    base = {k: v for k, v in os.environ.items()
            if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "OPENFORMERS_NATIVE")}
    return subprocess.run([sys.executable, "-m", "openformers", *args], capture_output=True, text=True, timeout=300,
                          env={**base, "PYTHONPATH": str(ROOT), **env_vars})


def test_version() -> None:
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"openformers {openformers.__version__}"


def test_json_report_from_the_command_line(tmp_path) -> None:
    out = _cli("env", "--json", OPENFORMERS_HUB=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "hf"))
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["openformers"] == openformers.__version__
    for dep in env.DEPENDENCIES:
        assert info["versions"][dep], dep
    assert info["openformers"]["location"] == str(ROOT / "openformers")
    assert info["torch"]["threads"] >= 1 and isinstance(info["torch"]["gpus"], list)
    assert info["caches"]["local_hub"] == str(tmp_path / "hub") and info["caches"]["HF_HOME"] == str(tmp_path / "hf")
    assert info["caches"]["HF_HUB_CACHE"] == str(tmp_path / "hf" / "hub")
    assert info["caches"]["HF_DATASETS_CACHE"] == str(tmp_path / "hf" / "datasets")
    assert info["settings"]["OPENFORMERS_HUB"] == {"value": str(tmp_path / "hub"), "set": True, "raw": str(tmp_path / "hub")}
    assert info["settings"]["OPENFORMERS_NATIVE"] == {"value": True, "set": False, "raw": None}
    assert sorted(info["native"]["kernels"]) == SOURCES  # every C file of the package, each with its loader
    expected = "loaded" if native.compiler() else "failed"
    for name, kernel in info["native"]["kernels"].items():
        assert kernel["state"] == expected, (name, kernel)
    if native.compiler():  # the 4-bit kernel says which products its build runs (runtime/int4_native.py)
        from openformers.runtime import int4_native

        assert info["native"]["kernels"]["runtime/int4_native.c"]["runs"] == f"{int4_native.simd()} products"


def test_text_report(monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENFORMERS_NATIVE", "0")
    assert env.run(argparse.Namespace(json=False, no_build=True)) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"openformers {openformers.__version__}")
    assert f"torch: {torch.__version__}" in text and f"PyTorch {torch.__version__}: {torch.get_num_threads()} threads" in text
    assert "Native kernels (disabled by OPENFORMERS_NATIVE" in text
    for source in SOURCES:
        assert f"  {source}: disabled -- OPENFORMERS_NATIVE=0" in text
    assert "OPENFORMERS_* settings:\n  OPENFORMERS_NATIVE=0 (False)" in text
    assert "Hugging Face hub cache:" in text and "CPU: " in text


@pytest.mark.skipif(native.compiler() is None, reason="no C compiler")
def test_a_failed_kernel_says_why(monkeypatch, tmp_path) -> None:
    from openformers.modules import swiglu_native

    monkeypatch.setenv("OPENFORMERS_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "cc"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler anywhere
    monkeypatch.setattr(swiglu_native, "_LIBRARY", native.NativeLibrary(swiglu_native._LIBRARY.source, lambda lib: None))
    try:
        kernels = env.kernels(build=True)["kernels"]
    finally:  # the other kernels also failed to build here: forget it, or later tests in this process see no library
        for lib in native.libraries():
            if lib.error is not None:
                lib.reset()
    assert kernels["modules/swiglu_native.c"]["state"] == "failed"
    assert "no C compiler found" in kernels["modules/swiglu_native.c"]["detail"]


def test_a_bad_setting_is_reported_not_fatal(monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENFORMERS_NATIVE", "maybe")
    monkeypatch.setenv("OPENFORMERS_OFFLINE", "x")
    assert env.run(argparse.Namespace(json=False, no_build=True)) == 0
    text = capsys.readouterr().out
    assert "Native kernels: not reported: OPENFORMERS_NATIVE='maybe' is not a true/false value" in text
    assert "offline: OPENFORMERS_OFFLINE='x' is not a true/false value" in text
    assert "  OPENFORMERS_NATIVE=maybe (invalid: OPENFORMERS_NATIVE='maybe'" in text


def test_gpus_are_listed(monkeypatch) -> None:
    """The GPU lines, on a CPU-only machine through torch.cuda's answers for one H100 (no GPU here)."""
    from types import SimpleNamespace

    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    info = env.report(build=False)
    assert info["torch"]["gpus"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 80.0, "capability": "9.0"}]
    assert "  GPU 0: NVIDIA H100 80GB HBM3, 80.0 GiB, compute capability 9.0" in env._text(info)
