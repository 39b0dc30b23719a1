"""Accelerate's own example script ``examples/nlp_example.py`` (huggingface/accelerate, Apache-2.0)
runs on openformers with only its imports, model name and dataset changed, in 1 process and under
``openformers launch --num_processes 2``.

The script is not part of this repository: the test reads it from a checkout of the accelerate
repository (``ACCELERATE_EXAMPLES_DIR``, or the git mirror below) and skips without one. The
changes, made by ``port`` below:
- imports: ``evaluate`` -> ``openformers.metrics``, ``datasets``/``transformers`` -> ``openformers``
  (``get_linear_schedule_with_warmup`` from ``openformers.training.schedulers``),
  ``accelerate`` -> ``openformers.distributed``;
- model name "bert-base-cased" -> the embedded MiniLM (``openformers.embedded_model_path("minilm")``);
- the hub dataset "nyu-mll/glue" "mrpc" -> the small CSV files in ``data/`` (same columns).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
MIRROR = Path("/work/.mirror/huggingface+accelerate/repo")

REPLACEMENTS = [
    ("import evaluate\n", "from openformers import metrics as evaluate\n"),
    ("from datasets import load_dataset\n", "from openformers import load_dataset\n"),
    ("from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup, set_seed\n",
     "from openformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed\n"
     "from openformers.training.schedulers import get_linear_schedule_with_warmup\n"),
    ("from accelerate import Accelerator, DistributedType\n", "from openformers.distributed import Accelerator, DistributedType\n"),
    ('"bert-base-cased"', 'openformers.embedded_model_path("minilm")'),
    ('load_dataset("nyu-mll/glue", "mrpc")',
     f'load_dataset("csv", data_files={{"train": {str(HERE / "data" / "mrpc_train.csv")!r}, '
     f'"validation": {str(HERE / "data" / "mrpc_validation.csv")!r}}})'),
]


def _upstream() -> str | None:
    folder = os.environ.get("ACCELERATE_EXAMPLES_DIR")
    if folder and (Path(folder) / "nlp_example.py").is_file():
        return (Path(folder) / "nlp_example.py").read_text()
    if MIRROR.exists():
        out = subprocess.run(["git", "--git-dir", str(MIRROR), "show", "HEAD:examples/nlp_example.py"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout
    return None


def port(source: str) -> str:
    for old, new in REPLACEMENTS:
        if old not in source:
            raise AssertionError(f"nlp_example.py changed upstream: {old!r} not found")
        source = source.replace(old, new)
    return "import openformers\n" + source


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    source = _upstream()
    if source is None:
        pytest.skip("no accelerate checkout: set ACCELERATE_EXAMPLES_DIR to its examples/ folder")
    path = tmp_path_factory.mktemp("nlp") / "nlp_example.py"
    path.write_text(port(source))
    assert not re.search(r"^\s*(from|import) (accelerate|transformers|datasets|evaluate)\b", path.read_text(), re.M)
    return path


def _run(argv: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = subprocess.run([sys.executable, "-m", "openformers", "launch", *argv], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_nlp_example_runs(script, processes):
    out = _run(["--num_processes", str(processes), "--cpu", str(script), "--cpu"])
    epochs = re.findall(r"^epoch (\d): \{'accuracy': ([\d.]+), 'f1': ([\d.]+)\}", out, re.M)
    assert [e[0] for e in epochs] == ["0", "1", "2"], out[-2000:]
    # gather_for_metrics hands the metric exactly the 16 validation rows each epoch
    batches = re.findall(r"^=====  tensor\(\[([^\]]*)\]\)", out, re.M)
    assert all(len(b.split(",")) == 16 for b in batches) and len(batches) == 3 * (1 if processes == 1 else 2)
