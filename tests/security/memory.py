"""Run a snippet in a child process under an address-space limit and a time limit."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PRELUDE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
"""


def run_limited(code: str, *, limit_mb: int = 2500, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose address space is capped at ``limit_mb`` (importing
    torch and openformers takes ~700 MB of it); returns the finished process (output captured)."""
    script = _PRELUDE.format(limit=limit_mb << 20) + textwrap.dedent(code)
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=str(ROOT))


def timed_load(path: Path | str, error: str = "ValueError", error_from: str | None = None) -> subprocess.CompletedProcess:
    """``AutoModelForCausalLM.from_pretrained(path)`` under a 2000 MB cap: the child prints ``REFUSED <message>``
    when it raises ``error`` (imported from module ``error_from``), then ``MODULES <count>``: how many
    ``nn.Module`` objects were built during the call (a refusal before the model is built builds none;
    one layer of a tiny model is about ten)."""
    import_error = f"from {error_from} import {error}" if error_from else ""
    return run_limited(f"""
        import torch
        {import_error}
        from openformers.models.auto import AutoModelForCausalLM
        built = [0]
        _init = torch.nn.Module.__init__
        def _counting_init(self, *args, **kwargs):
            built[0] += 1
            _init(self, *args, **kwargs)
        torch.nn.Module.__init__ = _counting_init
        try:
            AutoModelForCausalLM.from_pretrained({str(path)!r})
        except {error} as exc:
            print("REFUSED", exc)
        print("MODULES", built[0])
    """, limit_mb=2000, timeout=60)


def modules_built(proc: subprocess.CompletedProcess) -> int:
    """The number of modules a :func:`timed_load` child built before it returned or refused."""
    return int(proc.stdout.split("MODULES")[1])
