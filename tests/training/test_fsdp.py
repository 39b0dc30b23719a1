"""FSDP2 sharded training: 2 processes on gloo train like one process with the same global batch,
write checkpoints from_pretrained reads, and resume exactly (optimizer state included).

One torchrun launch runs every sharded job (run_fsdp.py MODE both); the single-process
references run in this process.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openformers import AutoModelForCausalLM, Trainer, TrainingArguments
from openformers.training import fsdp
from tests.training import run_fsdp
from tests.training.helpers import tiny_gpt2

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(_free_port()), str(HERE / "run_fsdp.py"), str(root / "two"), "both", "4"],
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes runs; given back for the tests after these
    try:
        run_fsdp.parity(str(root / "one"), 8, "")
        run_fsdp.resume(str(root / "one"), 8, "")
        run_fsdp.sharded(str(root / "one"), 8, "")
        # one unsharded process resumes from the sharded checkpoint 2 processes wrote
        import shutil

        (root / "one_from_two").mkdir()
        shutil.copytree(root / "two" / "dcp_full" / "checkpoint-2", root / "one_from_two" / "checkpoint-2")
        run_fsdp.run(str(root / "one_from_two"), 8, fsdp="", resume=True, seed=1, max_steps=4, learning_rate=1e-3,
                     optim="adamw_torch")
    finally:
        torch.set_num_threads(threads)
    return root


def _losses(path: Path) -> list[float]:
    return json.loads((path / "losses.json").read_text())


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


def test_sharded_fp32_training_matches_one_process(runs):
    one, two = runs / "one" / "parity", runs / "two" / "parity"
    assert len(_losses(two)) == 3 and _losses(two) == pytest.approx(_losses(one), abs=1e-5)
    _assert_same_weights(one / "final", two / "final", atol=1e-5)
    # evaluation runs sharded too, each process on half the rows; the loss covers all of them
    assert json.loads((two / "eval_loss.json").read_text()) == pytest.approx(json.loads((one / "eval_loss.json").read_text()), abs=1e-5)
    # the checkpoint holds the whole model under the model's own class name
    config = json.loads((two / "checkpoint-2" / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"]
    _assert_same_weights(one / "checkpoint-2", two / "checkpoint-2", atol=1e-5)


def test_sharded_bf16_training_matches_one_process(runs):
    one, two = runs / "one" / "full", runs / "two" / "full"
    # bf16 parameters in every op (sharded) versus bf16 autocast (one process): close, not equal.
    # Adam turns such differences in near-zero gradients into full-size steps, so the weights are
    # compared through the losses, which move by ~0.1 over these steps.
    assert _losses(two) == pytest.approx(_losses(one), abs=3e-3)
    assert all(v.dtype == torch.float32 for v in _weights(two / "final").values())  # float32 master weights


def test_sharded_resume_continues_exactly(runs):
    full, resumed = runs / "two" / "full", runs / "two" / "resumed"
    optim = torch.load(full / "checkpoint-2" / "optimizer.pt", weights_only=True)
    assert "transformer.h.0.attn.c_attn.weight" in optim["state"]  # full Adam state, keyed by name
    assert optim["state"]["transformer.h.0.attn.c_attn.weight"]["exp_avg"].shape == (32, 96)
    assert _losses(resumed) == _losses(full)
    _assert_same_weights(full / "final", resumed / "final", atol=1e-6)


def test_sharded_state_dict_checkpoints_resume_on_two_and_on_one(runs):
    """fsdp_config state_dict_type=SHARDED_STATE_DICT: torch.distributed.checkpoint directories, no gathering."""
    two, one = _losses(runs / "two" / "dcp_full"), _losses(runs / "one" / "dcp_full")
    assert len(two) == 4 and two == pytest.approx(one, abs=1e-5)
    checkpoint = runs / "two" / "dcp_full" / "checkpoint-2"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir() and (checkpoint / "optimizer_0").is_dir()
    assert not (checkpoint / "model.safetensors").exists() and not (checkpoint / "optimizer.pt").exists()
    assert _losses(runs / "two" / "dcp_resumed") == pytest.approx(two, abs=1e-6)
    assert _losses(runs / "one_from_two") == pytest.approx(two, abs=1e-5)
    # the final save_model still gathers the whole model
    _assert_same_weights(runs / "one" / "dcp_full" / "final", runs / "two" / "dcp_full" / "final", atol=1e-5)


def test_sharded_optimizer_state_loads_into_unsharded_model(runs):
    """The name-keyed optimizer state of a sharded run fits an unsharded model too."""
    saved = torch.load(runs / "two" / "full" / "checkpoint-2" / "optimizer.pt", weights_only=True)
    model = tiny_gpt2()
    trainer = Trainer(model=model, args=TrainingArguments("x", report_to="none", learning_rate=3e-3, weight_decay=0.01))
    optimizer = trainer.create_optimizer()
    fsdp.load_optimizer_state(model, optimizer, saved)
    names = {p: n for n, p in model.named_parameters()}
    assert len(optimizer.state) == len(names)
    for param, state in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(state[key], saved["state"][names[param]][key], atol=0, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"fsdp": "full_shard"}, "torchrun"),
    ({"fsdp": "full_shard zero3"}, "unknown option"),
    ({"fsdp": "full_shard shard_grad_op"}, "several sharding strategies"),
    ({"fsdp": "full_shard offload"}, "already trains on the CPU"),
    ({"fsdp": "full_shard", "fp16": True}, "bf16=True"),
    ({"fsdp": "full_shard", "fsdp_config": {"wrap_everything": True}}, "unknown keys"),
    ({"fsdp": "full_shard", "fsdp_config": {"fsdp_version": 1}}, "FSDP2"),
    ({"fsdp": "full_shard", "fsdp_config": {"min_num_params": 10, "transformer_layer_cls_to_wrap": "GPT2Block"}}, "not both"),
    ({"fsdp": "no_shard offload"}, "needs sharding"),
])
def test_unsupported_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trainer(model=tiny_gpt2(), args=TrainingArguments(str(tmp_path), report_to="none", **kwargs))


def test_wrapping_plan():
    args = TrainingArguments("x", fsdp="auto_wrap", fsdp_config={"fsdp_reshard_after_forward": False})
    plan = fsdp.plan_from_args(args)
    assert plan is not None and plan.reshard_after_forward is False and not plan.hybrid
    assert fsdp.plan_from_args(TrainingArguments("x", fsdp="no_shard")) is None
    model = tiny_gpt2()
    blocks = fsdp._block_modules(model, plan)  # from the model's _no_split_modules
    assert blocks == list(model.transformer.h)
    bad = fsdp.plan_from_args(TrainingArguments("x", fsdp="full_shard", fsdp_config={"transformer_layer_cls_to_wrap": "LlamaDecoderLayer"}))
    with pytest.raises(ValueError, match="LlamaDecoderLayer"):
        fsdp._block_modules(model, bad)
    by_size = fsdp.plan_from_args(TrainingArguments("x", fsdp="full_shard", fsdp_config={"min_num_params": 5000}))
    # an MLP holds 8352 parameters, the rest of a block 4352; the tied embedding stays with the root
    assert fsdp._block_modules(model, by_size) == [model.transformer.h[0].mlp, model.transformer.h[1].mlp]
