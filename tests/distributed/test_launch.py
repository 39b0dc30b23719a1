"""``openformers launch``: Accelerate's config files (as ``accelerate config`` writes them) and flags
become torchrun's arguments and the environment the script's Accelerator reads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from openformers.cli.main import build_parser
from openformers.distributed.launch import launch_env, read_config_file, torchrun_args

ROOT = Path(__file__).resolve().parents[2]

FSDP_YAML = """\
compute_environment: LOCAL_MACHINE
debug: false
distributed_type: FSDP
downcast_bf16: 'no'
enable_cpu_affinity: false
fsdp_config:
  fsdp_activation_checkpointing: true
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_cpu_ram_efficient_loading: true
  fsdp_offload_params: false
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: SHARDED_STATE_DICT
  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer
  fsdp_version: 2
machine_rank: 1
main_process_ip: 10.0.0.1
main_process_port: 29555
main_training_function: main
mixed_precision: bf16
num_machines: 2
num_processes: 8
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: false
"""


@pytest.fixture(autouse=True)
def _no_default_config(monkeypatch, tmp_path):
    # a user's own Accelerate default config must not leak into these tests
    monkeypatch.setenv("ACCELERATE_CONFIG_FILE", str(tmp_path / "absent.yaml"))


def _config(argv: list[str]):
    from openformers.cli.launch import config_from_args

    return config_from_args(build_parser().parse_args(["launch", *argv]))


def test_accelerate_written_default_config_loads(tmp_path):
    from accelerate.utils import write_basic_config

    path = tmp_path / "default_config.yaml"
    write_basic_config(mixed_precision="bf16", save_location=str(path))
    config = _config(["--config_file", str(path), "train.py"])
    assert config.mixed_precision == "bf16"
    assert launch_env(config)["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_fsdp_config_across_machines(tmp_path):
    path = tmp_path / "fsdp.yaml"
    path.write_text(FSDP_YAML)
    config = _config(["--config_file", str(path), "train.py", "--lr", "1"])
    args = torchrun_args(config, "train.py", ["--lr", "1"])
    assert args[:10] == ["--nproc_per_node", "4", "--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1",
                         "--master_port", "29555"]
    assert args[-3:] == ["train.py", "--lr", "1"]
    env = launch_env(config)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "LlamaDecoderLayer"
    assert env["FSDP_ACTIVATION_CHECKPOINTING"] == "true" and env["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT"
    # the plugin reads them back
    from openformers.distributed import FullyShardedDataParallelPlugin

    old = dict(os.environ)
    os.environ.update(env)
    try:
        plugin = FullyShardedDataParallelPlugin()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"] and plugin.activation_checkpointing
    assert plugin.reshard_after_forward is True and plugin.auto_wrap_policy == "transformer_based_wrap"
    # flags override the file
    config = _config(["--config_file", str(path), "--num_processes", "2", "--num_machines", "1", "--machine_rank", "0",
                      "--mixed_precision", "no", "train.py"])
    assert torchrun_args(config, "train.py", [])[:6] == ["--nproc_per_node", "2", "--nnodes", "1", "--node_rank", "0"]
    assert launch_env(config)["ACCELERATE_MIXED_PRECISION"] == "no"


@pytest.mark.parametrize("text,message", [
    ("distributed_type: XLA\n", "not supported"),
    ("num_processes: 2\nwhatever: 1\n", "unknown keys"),
    ("- a\n", "mapping"),
])
def test_bad_config_files_are_named(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_config_file(path)


def test_bad_flags_are_refused():
    with pytest.raises(ValueError, match="multiple of"):
        torchrun_args(_config(["--num_processes", "3", "--num_machines", "2", "--main_process_ip", "h", "t.py"]), "t.py", [])
    with pytest.raises(ValueError, match="main_process_ip"):
        torchrun_args(_config(["--num_processes", "4", "--num_machines", "2", "t.py"]), "t.py", [])


def test_one_process_runs_the_script_with_the_settings(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("from openformers.distributed import Accelerator\n"
                      "a = Accelerator()\nprint(a.mixed_precision, a.gradient_accumulation_steps, a.num_processes)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "openformers", "launch", "--mixed_precision", "bf16",
                          "--gradient_accumulation_steps", "4", str(script)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["bf16", "4", "1"]
    missing = subprocess.run([sys.executable, "-m", "openformers", "launch", str(tmp_path / "nope.py")],
                             capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 2 and "no such training script" in missing.stderr
