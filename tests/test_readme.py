"""Every ```python block of README.md runs as written, each in a fresh folder and process.

A block that cannot run on a CPU-only test machine is preceded by the line
``<!-- readme-test: skip (why) -->``; keep those few.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\b[^>]*-->\s*$")
TIME_LIMIT_S = 600  # per block, generous for a loaded 2-core machine; most take seconds


def readme_blocks() -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) for each python block."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            previous = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            blocks.append((start + 1, "\n".join(lines[start + 1:j]) + "\n", bool(SKIP.search(previous))))
            i = j
        i += 1
    return blocks


BLOCKS = readme_blocks()


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 6
    assert sum(skipped for *_, skipped in BLOCKS) <= 2, "keep the skipped README blocks few"


@pytest.mark.slow
@pytest.mark.parametrize("line,code,skipped", BLOCKS, ids=[f"README.md:{line}" for line, *_ in BLOCKS])
def test_readme_block_runs(line, code, skipped, tmp_path):
    if skipped:
        pytest.skip(f"README.md:{line} is marked readme-test: skip")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1", OPENFORMERS_HUB=str(tmp_path / "hub"), OPENFORMERS_DATA_CACHE=str(tmp_path / "cache"),
               MPLBACKEND="Agg", CI="1")
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIME_LIMIT_S)
    assert proc.returncode == 0, f"README.md:{line} failed:\n{proc.stderr[-4000:]}"
    assert "<|im_end|>" not in proc.stdout, f"README.md:{line} printed a special token"
