"""torch_compile=True: the compiled model trains like the eager one.

The default test compiles with the "aot_eager" backend (TorchDynamo graph capture and
AOTAutograd, kernels run eagerly): inductor generates and builds C++ kernels with gcc, which
takes over a minute for this tiny model on two busy cores, so its test runs only when
OPENFORMERS_TEST_INDUCTOR=1 is set.
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from openformers import Trainer, TrainingArguments
from tests.training.helpers import tiny_gpt2


def _data() -> list[dict[str, torch.Tensor]]:
    # one sequence length and no attention mask: a single graph, no recompilation per shape
    ids = torch.randint(1, 64, (12, 8), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": row, "labels": row} for row in ids]


def _train(tmp_path, **kw) -> tuple[list[float], Trainer]:
    args = TrainingArguments(str(tmp_path), max_steps=3, per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                             disable_tqdm=True, report_to="none", learning_rate=1e-2, optim="sgd", **kw)
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=_data())
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h], trainer


def _check_against_eager(tmp_path, backend: str, atol: float) -> None:
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    eager_losses, eager = _train(tmp_path / "eager")
    torch._dynamo.reset()
    counters.clear()
    losses, compiled = _train(tmp_path / backend, torch_compile=True, torch_compile_backend=backend)
    assert isinstance(compiled._wrapped, OptimizedModule)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured graphs: it did not fall back to eager
    assert len(losses) == 3 and losses == pytest.approx(eager_losses, abs=atol)
    expected = eager.model.state_dict()
    for k, v in compiled.model.state_dict().items():
        torch.testing.assert_close(v, expected[k], atol=atol, rtol=0, msg=k)
    torch._dynamo.reset()


def test_compiled_training_matches_eager(tmp_path):
    _check_against_eager(tmp_path, "aot_eager", atol=1e-5)


def test_backend_or_mode_turns_compilation_on():
    assert TrainingArguments("x", torch_compile_backend="aot_eager").torch_compile is True
    assert TrainingArguments("x", torch_compile_mode="reduce-overhead").torch_compile is True
    assert TrainingArguments("x").torch_compile is False


@pytest.mark.skipif(not os.environ.get("OPENFORMERS_TEST_INDUCTOR"),
                    reason="inductor builds C++ kernels with gcc (over a minute here); set OPENFORMERS_TEST_INDUCTOR=1 to run")
def test_inductor_training_matches_eager(tmp_path):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("inductor needs a C++ compiler (g++ or $CXX) on the CPU")
    from torch._dynamo.exc import BackendCompilerFailed

    try:
        _check_against_eager(tmp_path, "inductor", atol=1e-5)
    except BackendCompilerFailed as exc:
        pytest.skip(f"inductor cannot compile on this machine: {str(exc).splitlines()[0]}")
