"""core/allocator.py, process-wide: building a model makes freed buffers come back without page faults."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from openformers.core import allocator

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

CHILD = r"""
import json, resource
import torch
from openformers.core import allocator
from openformers.models.llama import LlamaConfig, LlamaForCausalLM

def faults(n=4):  # minor page faults of allocating and freeing a 64 MiB buffer n times (above the
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # 32 MiB glibc's threshold moves to by itself)
    for _ in range(n):
        torch.ones(16 * 2**20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

before_model = faults()
LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1))  # building a model applies it
faults(1)  # the first one is faulted in once
with_model = faults()
with allocator.reuse_freed_memory() as active:  # the Trainer's scope on top
    faults(1)
faults(1)  # its exit handed the free memory back (malloc_trim): faulted in once more
after_scope = faults()
print(json.dumps({"process_wide": allocator._process_wide, "active": active, "before_model": before_model,
                  "with_model": with_model, "after_scope": after_scope}))
"""


def _run(**env_vars: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")
           and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "OPENFORMERS_REUSE_FREED_MEMORY")}
    env.update(env_vars)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_building_a_model_keeps_freed_buffers_for_reuse():
    run = _run()
    pages = 4 * (64 << 20) // 4096  # four 64 MiB buffers
    assert run["process_wide"] == allocator.kept_bytes() and run["active"] is True
    # (this machine now and then faults one buffer of four in again even when its memory is kept)
    assert run["before_model"] > 3 * pages // 4, run  # glibc's defaults: every buffer faulted in again
    assert run["with_model"] <= pages // 4, run  # reused
    assert run["after_scope"] <= pages // 4, run  # the Trainer's scope restores the process-wide settings


@glibc
def test_switched_off_by_the_environment():
    run = _run(OPENFORMERS_REUSE_FREED_MEMORY="0")
    pages = 4 * (64 << 20) // 4096
    assert run["process_wide"] == 0 and run["active"] is False
    assert run["with_model"] > 3 * pages // 4, run


def test_limit_is_a_sixteenth_of_memory_at_most_1_gib(monkeypatch):
    monkeypatch.setattr(allocator, "memory_limit", lambda: 8 << 30)
    assert allocator.kept_bytes() == 512 << 20
    monkeypatch.setattr(allocator, "memory_limit", lambda: 64 << 30)
    assert allocator.kept_bytes() == 1 << 30
    monkeypatch.setattr(allocator, "memory_limit", lambda: 0)
    assert allocator.kept_bytes() == 64 << 20
