"""Accelerate's own example script ``examples/nlp_example.py`` (huggingface/accelerate, Apache-2.0),
ported in ``tests/compat/scripts/accelerate_nlp_example.py`` (its header lists the changes: the
embedded MiniLM and the small MRPC CSV files in ``data/``), runs on openformers in 1 process and
under ``openformers launch --num_processes 2`` (gloo, CPU)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "tests" / "compat" / "scripts" / "accelerate_nlp_example.py"


def test_port_imports_nothing_from_the_reference_stack():
    source = SCRIPT.read_text()
    assert not re.search(r"^\s*(from|import) (accelerate|transformers|datasets|evaluate)\b", source, re.M)


def _run(argv: list[str], tmp_path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "OPENFORMERS_DATA_CACHE": str(tmp_path / "data-cache")}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = subprocess.run([sys.executable, "-m", "openformers", "launch", *argv], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_nlp_example_runs(processes, tmp_path):
    out = _run(["--num_processes", str(processes), "--cpu", str(SCRIPT), "--cpu"], tmp_path)
    # both ranks write to one pipe, so their lines may interleave: take the ranks' tensor prints out first
    tensors = re.compile(r"=====  tensor\(\[([^\]]*)\]\)")
    batches = tensors.findall(out)
    epochs = re.findall(r"epoch (\d):\s*\{'accuracy': ([\d.]+), 'f1': ([\d.]+)\}", tensors.sub("", out))
    assert [e[0] for e in epochs] == ["0", "1", "2"], out[-2000:]
    # accelerator.print prints once, on the main process only
    assert len(epochs) == 3
    # gather_for_metrics hands the metric exactly the 16 validation rows each epoch, on every rank
    assert all(len(b.split(",")) == 16 for b in batches) and len(batches) == 3 * processes, out[-2000:]
    # every rank's model is the same after DDP training: all ranks predict the same
    assert len(set(batches[-processes:])) == 1
