"""The trainer keeps freed host memory for reuse while it trains (training/allocator.py)."""
from __future__ import annotations

import os
import platform
import resource

import pytest
import torch

from openformers import Trainer, TrainerCallback, TrainingArguments
from openformers.training import allocator
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def page_faults_of_big_buffers(n: int = 6) -> int:
    """Minor page faults taken by allocating and freeing a 64 MiB buffer ``n`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        torch.ones(16 * 2**20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_freed_buffers_are_reused_instead_of_faulted_in_again(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("MALLOC_")] + ["GLIBC_TUNABLES", "LD_PRELOAD", "OPENFORMERS_REUSE_FREED_MEMORY"]:
        monkeypatch.delenv(key, raising=False)
    outside = page_faults_of_big_buffers()
    with allocator.reuse_freed_memory() as active:
        assert active
        with allocator.reuse_freed_memory() as nested:
            assert nested
        page_faults_of_big_buffers(1)  # the first one is faulted in once
        inside = page_faults_of_big_buffers()
    after = page_faults_of_big_buffers()
    assert inside * 4 < outside, (inside, outside)  # each buffer faulted in again outside, reused inside
    assert inside * 4 < after, (inside, after)  # the defaults are back after the outermost exit


def test_the_users_allocator_choice_is_left_alone() -> None:
    assert not allocator.allocator_chosen_by_user({})
    for env in ({"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"},
                {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, {"OPENFORMERS_REUSE_FREED_MEMORY": "0"}):
        assert allocator.allocator_chosen_by_user(env), env
    with allocator.reuse_freed_memory(enabled=False) as active:
        assert not active


@glibc
def test_train_runs_inside_it_on_cpu(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OPENFORMERS_REUSE_FREED_MEMORY", raising=False)
    if allocator.allocator_chosen_by_user():
        pytest.skip("this environment chose its allocator")
    seen = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(allocator._depth)

    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             disable_tqdm=True, save_strategy="no")
    Trainer(model=tiny_gpt2(), args=args, train_dataset=ragged_lm_data(8), data_collator=pad_collator,
            callbacks=[Probe()]).train()
    assert seen == [1, 1] and allocator._depth == 0
