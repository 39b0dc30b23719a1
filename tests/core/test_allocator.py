"""core/allocator.py: freed tensor memory is reused instead of faulted in again, and the switch works."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from openformers.core import allocator

CHILD = r"""
import json, resource, sys
import torch
from openformers.core import allocator
from openformers.models.llama import LlamaConfig, LlamaForCausalLM
LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1))  # building a model applies it
x = torch.ones(1 << 24)  # 64 MB: above the largest threshold glibc moves to by itself (32 MB)
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x * 2  # a fresh 64 MB result, freed at the next iteration
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del y
print(json.dumps({"applied": allocator._state["applied"], "faults": faults[2:]}))
"""


def _run(env_value: str | None) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENFORMERS_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["OPENFORMERS_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    kept, default = _run(None), _run("0")
    assert kept["applied"] is True and default["applied"] is False
    pages = (64 << 20) // 4096
    # glibc's default serves each fresh 64 MB block with new pages: ~16384 faults every time
    assert min(default["faults"]) > pages // 2
    # kept: the freed block is handed out again, already in memory
    assert max(kept["faults"]) < pages // 8


def test_limit_is_a_sixteenth_of_memory_at_most_1_gib(monkeypatch):
    monkeypatch.setattr(allocator, "memory_limit", lambda: 8 << 30)
    assert allocator.kept_bytes() == 512 << 20
    monkeypatch.setattr(allocator, "memory_limit", lambda: 64 << 30)
    assert allocator.kept_bytes() == 1 << 30
    monkeypatch.setattr(allocator, "memory_limit", lambda: 0)
    assert allocator.kept_bytes() == 64 << 20
