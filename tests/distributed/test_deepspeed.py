"""DeepSpeed: "auto" values filled from TrainingArguments / the Accelerator as transformers and
Accelerate fill them, mismatches named; and (with the deepspeed package) ZeRO-2 and ZeRO-3 on
2 processes (gloo, DeepSpeed's CPU accelerator) train like DDP, through the Accelerator and the
Trainer, whose ZeRO-3 checkpoints resume. The first run builds DeepSpeed's CPU communication op
(minutes, then cached)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openformers import TrainingArguments
from openformers.distributed import deepspeed as ds
from openformers.distributed.deepspeed import DeepSpeedPlugin, trainer_config

HERE = Path(__file__).parent
ROOT = HERE.parents[1]

# the shape of transformers' documented ZeRO-3 example config
ZERO3 = {
    "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16},
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                      "warmup_num_steps": "auto", "total_num_steps": "auto"}},
    "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                          "offload_param": {"device": "cpu", "pin_memory": True}, "overlap_comm": True,
                          "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                          "stage3_param_persistence_threshold": "auto", "stage3_gather_16bit_weights_on_model_save": True},
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": False,
}


class _Model(torch.nn.Module):
    class config:  # noqa: N801 - a model config's shape
        hidden_size = 64


def test_auto_values_filled_from_training_arguments(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ZERO3))
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=3, learning_rate=3e-4,
                             adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-7, weight_decay=0.1, max_grad_norm=0.5,
                             warmup_steps=10, bf16=True, deepspeed=str(path))
    config = trainer_config(args.deepspeed, args, world_size=2, num_training_steps=100, model=_Model())
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 24 and config["gradient_clipping"] == 0.5
    assert config["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.8, 0.95], "eps": 1e-7, "weight_decay": 0.1}
    assert config["scheduler"]["params"] == {"warmup_min_lr": 0, "warmup_max_lr": 3e-4, "warmup_num_steps": 10,
                                             "total_num_steps": 100}
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    zero = config["zero_optimization"]
    assert zero["reduce_bucket_size"] == 64 * 64 and zero["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64)
    assert zero["stage3_param_persistence_threshold"] == 640
    assert config["steps_per_print"] == 2000  # values given stay


def test_mismatch_and_unfillable_auto_are_named(tmp_path):
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3)
    with pytest.raises(ValueError, match=r"optimizer.params.lr=0.1 vs TrainingArguments 0.001"):
        trainer_config({"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}, args, world_size=1, num_training_steps=5)
    with pytest.raises(ValueError, match=r"zero_optimization.sub_group_size=\"auto\""):
        trainer_config({"zero_optimization": {"stage": 2, "sub_group_size": "auto"}}, args, world_size=1, num_training_steps=5)
    with pytest.raises(ValueError, match="neither a dict"):
        trainer_config(str(tmp_path / "missing.json"), args, world_size=1, num_training_steps=5)


def test_plugin_builds_a_config_and_reads_the_launch_environment(monkeypatch):
    plugin = DeepSpeedPlugin(zero_stage=3, offload_optimizer_device="cpu", offload_param_device="cpu", gradient_clipping=1.0)
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"] == {"device": "cpu"} and zero["offload_param"] == {"device": "cpu"}
    with pytest.raises(ValueError, match="only ZeRO stage 3"):
        DeepSpeedPlugin(zero_stage=2, offload_param_device="cpu")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == 1 and plugin.deepspeed_config["gradient_accumulation_steps"] == 4


def test_accelerator_values_fill_the_plugin_config():
    from openformers.distributed import Accelerator

    acc = Accelerator(cpu=True, mixed_precision="bf16", gradient_accumulation_steps=2)
    config = {k: v for k, v in ZERO3.items() if k != "scheduler"}
    plugin = DeepSpeedPlugin(hf_ds_config={**config, "zero_optimization": {"stage": 2}})
    model = _Model()
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=2e-3, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.0)
    config = ds.accelerator_config(plugin, acc, batch_size=8, optimizer=optimizer, model=model)
    assert config["train_micro_batch_size_per_gpu"] == 8 and config["train_batch_size"] == 16
    assert config["optimizer"]["params"] == {"lr": 2e-3, "betas": [0.9, 0.99], "eps": 1e-6, "weight_decay": 0.0}
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False


def test_missing_package_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ImportError, match=r"openformers\[deepspeed\]"):
        ds.require_deepspeed()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="the deepspeed extra is not installed")
def test_zero2_and_zero3_equal_ddp_on_two_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "openformers", "launch", "--num_processes", "2",
                           str(HERE / "run_deepspeed.py"), str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    from safetensors.torch import load_file

    ddp = json.loads((tmp_path / "ddp.json").read_text())["losses"]
    weights = load_file(tmp_path / "ddp" / "model.safetensors")
    zero3 = json.loads((tmp_path / "zero3.json").read_text())
    assert (tmp_path / "zero3_state" / "pytorch_model").is_dir()  # the engine's own checkpoint, inside save_state's
    assert zero3["resumed"] == pytest.approx(zero3["losses"][1:], abs=1e-6)  # load_state: the same next steps
    for name in ("zero2", "zero3"):
        assert json.loads((tmp_path / f"{name}.json").read_text())["losses"] == pytest.approx(ddp, abs=1e-5), name
        other = load_file(tmp_path / name / "model.safetensors")
        assert other.keys() == weights.keys(), name
        for k in weights:
            torch.testing.assert_close(other[k], weights[k], atol=1e-5, rtol=1e-5, msg=f"{name} {k}")
    # the Trainer with deepspeed= (ZeRO-3, "auto" values): as DDP; resumed from its checkpoint-2: the same steps 3-4
    trainer_ddp = json.loads((tmp_path / "trainer_ddp.json").read_text())
    zero3 = json.loads((tmp_path / "trainer_zero3.json").read_text())
    resumed = json.loads((tmp_path / "trainer_zero3_resumed.json").read_text())
    assert len(trainer_ddp) == 4 and zero3 == pytest.approx(trainer_ddp, abs=1e-5)
    assert resumed[2:] == pytest.approx(zero3[2:], abs=1e-6)
    assert (tmp_path / "trainer_zero3" / "checkpoint-2" / "global_step2").is_dir()
    from openformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(tmp_path / "trainer_zero3" / "final").state_dict()
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "trainer_ddp" / "final").state_dict()
    for k in reference:
        torch.testing.assert_close(final[k], reference[k], atol=1e-5, rtol=1e-5, msg=k)
