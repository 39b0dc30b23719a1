"""Training numbers that do not depend on the load: fixed OpenMP teams, and a warning when a resume changes the thread count."""
from __future__ import annotations

import hashlib

import pytest
import torch

from openformers import Trainer, TrainerCallback, TrainingArguments
from openformers.training import threads
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2

pytestmark = pytest.mark.skipif(threads._openmp() is None, reason="no OpenMP runtime loaded with torch")


@pytest.fixture
def dynamic_on():
    """OpenMP may shrink teams (as OMP_DYNAMIC=true makes it), put back afterwards."""
    lib = threads._openmp()
    before = lib.omp_get_dynamic()
    lib.omp_set_dynamic(1)
    yield
    lib.omp_set_dynamic(before)


def _layer_norm_grad() -> str:
    torch.manual_seed(0)
    x, w = torch.randn(48, 32, requires_grad=True), torch.ones(32, requires_grad=True)
    torch.nn.functional.layer_norm(x, (32,), w).backward(torch.randn(48, 32))
    return hashlib.sha1(w.grad.numpy().tobytes()).hexdigest()


def test_layer_norm_gradient_depends_on_the_team_size():
    # why teams must not shrink: the same operator on the same numbers, one thread against two
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = _layer_norm_grad()
        torch.set_num_threads(1)
        one = _layer_norm_grad()
    finally:
        torch.set_num_threads(before)
    assert one != two


def test_train_runs_with_fixed_teams_and_restores_the_setting(tmp_path, dynamic_on):
    seen = []

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            seen.append(threads.dynamic_teams())

    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, save_strategy="no", report_to="none",
                             disable_tqdm=True)
    Trainer(model=tiny_gpt2(), args=args, train_dataset=ragged_lm_data(8), data_collator=pad_collator, callbacks=[Probe()]).train()
    assert seen == [False, False]
    assert threads.dynamic_teams() is True  # the process's own setting, back after train()


def test_resume_with_another_thread_count_warns(tmp_path):
    def trainer():
        args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, save_steps=1, report_to="none",
                                 disable_tqdm=True)
        return Trainer(model=tiny_gpt2(), args=args, train_dataset=ragged_lm_data(8), data_collator=pad_collator)

    before = torch.get_num_threads()
    trainer().train()
    try:
        torch.set_num_threads(before + 1)
        with pytest.warns(UserWarning, match=rf"written by a run with {before} CPU threads and this one has {before + 1}"):
            trainer().train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    finally:
        torch.set_num_threads(before)
