"""DDP with 2 processes on gloo gives the same training as one process with the same global batch.

SGD, not Adam: Adam turns float noise in near-zero gradients (e.g. key biases, which softmax
ignores) into full-size steps, which would hide what this test checks.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent


def test_two_process_gloo_matches_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(HERE / "run_ddp.py"), str(tmp_path / "one"), "8"], capture_output=True,
                            text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                          str(HERE / "run_ddp.py"), str(tmp_path / "two"), "4"], capture_output=True, text=True, timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = load_file(tmp_path / "one" / "final.safetensors"), load_file(tmp_path / "two" / "final.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, msg=k)
    la = [float(x) for x in (tmp_path / "one" / "losses.txt").read_text().split()]
    lb = [float(x) for x in (tmp_path / "two" / "losses.txt").read_text().split()]
    assert len(la) == 3 and la == __import__("pytest").approx(lb, abs=1e-5)
    # total_flos counts every process's work, the same on each rank (as the reference's store_flos)
    (total_one, local_one), = [map(float, (tmp_path / "one" / "flos_0.txt").read_text().split())]
    assert total_one == local_one > 0
    ranks = [tuple(map(float, (tmp_path / "two" / f"flos_{r}.txt").read_text().split())) for r in (0, 1)]
    assert ranks[0][0] == ranks[1][0] == __import__("pytest").approx(ranks[0][1] + ranks[1][1], rel=1e-12)
    assert ranks[0][1] > 0 and ranks[1][1] > 0
