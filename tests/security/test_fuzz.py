"""Mutation fuzzing per file format (see ``fuzz_child.py``): every mutated file loads or is
refused with an error of the library's own kinds naming the file or field, within a time and
memory bound; never a crash, a hang, an escape or an unrelated exception.

The default run does a few cases per format; ``pytest -m fuzz`` does many more;
``OPENFORMERS_FUZZ_CASES`` (and ``OPENFORMERS_FUZZ_SEED``) set them explicitly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .memory import ROOT

FORMATS = ["safetensors", "gguf", "tokenizer", "config", "adapter", "text"]
DEFAULT_CASES, FUZZ_RUN_CASES = 12, 400
MEMORY_LIMIT_MB = 4000

pytestmark = pytest.mark.fuzz


def _cases(config: pytest.Config) -> int:
    if os.environ.get("OPENFORMERS_FUZZ_CASES"):
        return int(os.environ["OPENFORMERS_FUZZ_CASES"])
    return FUZZ_RUN_CASES if "fuzz" in (config.getoption("markexpr") or "") else DEFAULT_CASES


@pytest.fixture(scope="module")
def fuzz_results(request, tmp_path_factory):
    pytest.importorskip("gguf")
    cases = _cases(request.config)
    out = tmp_path_factory.mktemp("fuzz") / "results.json"
    limit = MEMORY_LIMIT_MB << 20
    code = (f"import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            f"sys.argv = ['fuzz_child', '--cases', '{cases}', '--seed', '{os.environ.get('OPENFORMERS_FUZZ_SEED', '0')}', "
            f"'--out', {str(out)!r}]; runpy.run_module('tests.security.fuzz_child', run_name='__main__')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RUST_BACKTRACE": "0"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=60 + 6 * cases * len(FORMATS))
    assert proc.returncode == 0, f"the fuzzing process died (status {proc.returncode}): {proc.stderr[-3000:]}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_files_load_or_are_refused_by_name(fuzz_results, fmt):
    result = fuzz_results[fmt]
    assert result["unexpected"] == [], json.dumps(result["unexpected"][:5], indent=1)
    assert result["ok"] + result["refused"] > 0
