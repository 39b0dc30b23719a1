"""A built wheel, installed in a fresh virtual environment (not editable), carries every C source of
the package, and each native kernel builds and loads from there."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from openformers.core import native

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "openformers"


@pytest.mark.slow
def test_an_installed_wheel_has_and_loads_every_kernel(tmp_path) -> None:
    sources = sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.c"))
    assert sources, "the package has no C source"
    # build from a copy, so the checkout gets no build/ or egg-info directory
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(PACKAGE, tree / "openformers", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    wheels = tmp_path / "wheels"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(wheels), str(tree)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = wheels.glob("openformers-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(sources) <= names, sorted(set(sources) - names)

    # a fresh environment that sees the shared site-packages (torch and the other dependencies: no
    # network), with the wheel installed in its own site-packages, in front of any editable install
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "--force-reinstall", "-q", str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    work = tmp_path / "elsewhere"  # not the checkout: it must not be on sys.path
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OPENFORMERS_NATIVE")}
    clean["OPENFORMERS_CACHE"] = str(tmp_path / "cache")  # compiled here from the installed sources
    out = subprocess.run([str(python), "-m", "openformers", "env", "--json"], capture_output=True, text=True,
                         cwd=work, env=clean, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout)
    installed = Path(info["openformers"]["location"])
    assert installed.is_relative_to(env_dir), installed  # the wheel's copy, not the checkout or an editable install
    for source in sources:
        assert (installed.parent / source).is_file(), source
    kernels = info["native"]["kernels"]
    assert sorted("openformers/" + name for name in kernels) == sources
    for name, kernel in kernels.items():
        if native.compiler() is not None:
            assert kernel["state"] == "loaded", (name, kernel)
            assert Path(kernel["detail"]).parent == tmp_path / "cache" / "native"
        else:
            assert kernel["state"] == "failed" and "no C compiler" in kernel["detail"], (name, kernel)
