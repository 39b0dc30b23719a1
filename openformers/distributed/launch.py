"""``openformers launch``: start a training script on one or more processes and machines.

Multi-process runs go through PyTorch's own launcher (``torch.distributed.run``, i.e. torchrun);
one process without sharding runs the script directly. Settings come from the command line,
else from a config file in Accelerate's format (YAML or JSON, as ``accelerate config`` writes it;
``--config_file``, else Accelerate's default file if there is one), and reach the script's
``Accelerator`` through Accelerate's environment variables (``ACCELERATE_MIXED_PRECISION``,
``ACCELERATE_USE_FSDP`` with ``FSDP_*``, ``ACCELERATE_USE_DEEPSPEED`` with ``ACCELERATE_DEEPSPEED_*``).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DISTRIBUTED_TYPES = ("NO", "MULTI_CPU", "MULTI_GPU", "FSDP", "DEEPSPEED", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU",
                      "MULTI_HPU", "MULTI_SDAA", "MULTI_MUSA", "XLA", "MEGATRON_LM")
# Accelerate config keys that only matter for hardware this launcher has no part in: read, no effect
_IGNORED_KEYS = ("compute_environment", "downcast_bf16", "tpu_env", "tpu_use_cluster", "tpu_use_sudo", "gpu_ids",
                 "main_training_function", "dynamo_config", "enable_cpu_affinity", "debug", "ipex_config", "mpirun_config",
                 "megatron_lm_config", "fp8_config", "parallelism_config", "commands", "command_file", "tpu_name",
                 "tpu_zone", "num_cpu_threads_per_process", "use_cpu")

# fsdp_config key of a config file -> environment variable the Accelerator's plugin reads
_FSDP_ENV = {
    "fsdp_version": "FSDP_VERSION",
    "fsdp_sharding_strategy": "FSDP_SHARDING_STRATEGY",
    "fsdp_reshard_after_forward": "FSDP_RESHARD_AFTER_FORWARD",
    "fsdp_auto_wrap_policy": "FSDP_AUTO_WRAP_POLICY",
    "fsdp_transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP",
    "fsdp_min_num_params": "FSDP_MIN_NUM_PARAMS",
    "fsdp_offload_params": "FSDP_OFFLOAD_PARAMS",
    "fsdp_state_dict_type": "FSDP_STATE_DICT_TYPE",
    "fsdp_activation_checkpointing": "FSDP_ACTIVATION_CHECKPOINTING",
    "fsdp_cpu_ram_efficient_loading": "FSDP_CPU_RAM_EFFICIENT_LOADING",
    "fsdp_sync_module_states": "FSDP_SYNC_MODULE_STATES",
    "fsdp_use_orig_params": "FSDP_USE_ORIG_PARAMS",
    "fsdp_forward_prefetch": "FSDP_FORWARD_PREFETCH",
    "fsdp_backward_prefetch": "FSDP_BACKWARD_PREFETCH",
}
# deepspeed_config key -> environment variable
_DEEPSPEED_ENV = {
    "deepspeed_config_file": "ACCELERATE_DEEPSPEED_CONFIG_FILE",
    "zero_stage": "ACCELERATE_DEEPSPEED_ZERO_STAGE",
    "offload_optimizer_device": "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
    "offload_param_device": "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE",
    "gradient_clipping": "ACCELERATE_GRADIENT_CLIPPING",
    "zero3_init_flag": "ACCELERATE_DEEPSPEED_ZERO3_INIT",
    "zero3_save_16bit_model": "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL",
    "gradient_accumulation_steps": "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
}


@dataclass
class LaunchConfig:
    """What to start: Accelerate's config file fields, overridden by command-line flags."""

    distributed_type: str = "NO"
    num_processes: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    mixed_precision: str = "no"
    gradient_accumulation_steps: int | None = None
    use_cpu: bool = False
    rdzv_backend: str = "static"
    same_network: bool = True
    max_restarts: int = 0
    monitor_interval: float = 0.1
    fsdp_config: dict[str, Any] = field(default_factory=dict)
    deepspeed_config: dict[str, Any] = field(default_factory=dict)


def default_config_file() -> Path:
    """Accelerate's default config file: ``$HF_HOME/accelerate/default_config.yaml``."""
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(os.environ.get("ACCELERATE_CONFIG_FILE", os.path.join(hf_home, "accelerate", "default_config.yaml")))


def read_config_file(path: str | os.PathLike) -> LaunchConfig:
    """A config file written by ``accelerate config`` (YAML, or JSON for a ``.json`` file)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config_file {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as exc:
        raise ValueError(f"--config_file {path}: cannot parse it ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"--config_file {path}: expected a mapping of settings, got {type(raw).__name__}")
    known = {f for f in LaunchConfig.__dataclass_fields__}
    unknown = sorted(set(raw) - known - set(_IGNORED_KEYS))
    if unknown:
        raise ValueError(f"--config_file {path}: unknown keys {unknown}; known keys are {sorted(known)}")
    config = LaunchConfig(**{k: v for k, v in raw.items() if k in known and v is not None})
    config.use_cpu = bool(raw.get("use_cpu", False))
    config.distributed_type = str(config.distributed_type).upper()
    if config.distributed_type not in _DISTRIBUTED_TYPES:
        raise ValueError(f"--config_file {path}: distributed_type={config.distributed_type!r} is unknown; "
                         f"use one of NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED")
    if config.distributed_type in ("XLA", "MEGATRON_LM"):
        raise ValueError(f"--config_file {path}: distributed_type={config.distributed_type} is not supported; "
                         f"use MULTI_GPU, MULTI_CPU, FSDP or DEEPSPEED")
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flag(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def launch_env(config: LaunchConfig) -> dict[str, str]:
    """The environment variables that carry ``config`` to the script's Accelerator."""
    env: dict[str, str] = {"ACCELERATE_MIXED_PRECISION": str(config.mixed_precision or "no").lower()}
    if config.mixed_precision not in ("no", "fp16", "bf16", None):
        raise ValueError(f"--mixed_precision {config.mixed_precision!r}: choose no, fp16 or bf16")
    if config.use_cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    if config.gradient_accumulation_steps:
        env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] = str(int(config.gradient_accumulation_steps))
    if config.distributed_type == "FSDP":
        env["ACCELERATE_USE_FSDP"] = "true"
        for key, value in config.fsdp_config.items():
            name = _FSDP_ENV.get(key if key.startswith("fsdp_") else f"fsdp_{key}")
            if name is None:
                raise ValueError(f"fsdp_config key {key!r} is unknown; known keys are {sorted(_FSDP_ENV)}")
            env[name] = ",".join(value) if isinstance(value, (list, tuple)) else _flag(value)
    if config.distributed_type == "DEEPSPEED":
        env["ACCELERATE_USE_DEEPSPEED"] = "true"
        for key, value in config.deepspeed_config.items():
            name = _DEEPSPEED_ENV.get(key)
            if name is None:
                raise ValueError(f"deepspeed_config key {key!r} is unknown; known keys are {sorted(_DEEPSPEED_ENV)}")
            env[name] = _flag(value)
    return env


def torchrun_args(config: LaunchConfig, script: str, script_args: list[str], module: bool = False,
                  no_python: bool = False) -> list[str]:
    """``torch.distributed.run`` arguments for ``config``."""
    if config.num_processes < 1 or config.num_machines < 1:
        raise ValueError(f"--num_processes {config.num_processes} / --num_machines {config.num_machines}: must be >= 1")
    if config.num_processes % config.num_machines:
        raise ValueError(f"--num_processes {config.num_processes} (all machines together) is not a multiple of "
                         f"--num_machines {config.num_machines}")
    if not 0 <= config.machine_rank < config.num_machines:
        raise ValueError(f"--machine_rank {config.machine_rank}: must be in 0..{config.num_machines - 1}")
    if config.num_machines > 1 and not config.main_process_ip:
        raise ValueError("several machines: give --main_process_ip (the address of machine 0) and --main_process_port")
    port = config.main_process_port or (29500 if config.num_machines > 1 else _free_port())
    args = ["--nproc_per_node", str(config.num_processes // config.num_machines), "--nnodes", str(config.num_machines),
            "--node_rank", str(config.machine_rank), "--master_addr", config.main_process_ip or "127.0.0.1",
            "--master_port", str(port), "--max_restarts", str(config.max_restarts),
            "--monitor_interval", str(config.monitor_interval)]
    if config.num_machines > 1 and config.rdzv_backend != "static":
        args += ["--rdzv_backend", config.rdzv_backend, "--rdzv_endpoint", f"{config.main_process_ip}:{port}"]
    if module:
        args.append("--module")
    if no_python:
        args.append("--no_python")
    return args + [script, *script_args]


def launch(config: LaunchConfig, script: str, script_args: list[str], module: bool = False, no_python: bool = False) -> int:
    """Run ``script`` as ``config`` says; returns its exit status (the first failing process's)."""
    env = launch_env(config)
    if config.num_processes == 1 and config.num_machines == 1 and config.distributed_type in ("NO", "MULTI_CPU", "MULTI_GPU"):
        command = [script] if no_python else [sys.executable, *(["-m"] if module else []), script]
        return subprocess.call(command + script_args, env={**os.environ, **env})
    argv = torchrun_args(config, script, script_args, module=module, no_python=no_python)
    os.environ.update(env)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(argv))
    except ChildFailedError as exc:
        failures = exc.failures
        first = failures[min(failures)] if failures else None
        code = getattr(first, "exitcode", 1) or 1
        print(f"openformers launch: {script} failed (exit status {code} on local rank {min(failures) if failures else '?'})",
              file=sys.stderr)
        return code if code > 0 else 1
    return 0
