"""``openformers launch``: run a training script on N processes (torchrun underneath), with
Accelerate's flags and config files."""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--config_file", default=None, help="an Accelerate config file (YAML or JSON); default: "
                        "Accelerate's default_config.yaml when it exists")
    parser.add_argument("--num_processes", type=int, default=None, help="processes in all, over every machine")
    parser.add_argument("--num_machines", type=int, default=None, help="machines taking part (default: the config file's, else 1)")
    parser.add_argument("--machine_rank", type=int, default=None, help="this machine's rank (0 is the main one)")
    parser.add_argument("--main_process_ip", default=None, help="address of machine 0")
    parser.add_argument("--main_process_port", type=int, default=None, help="port of the rendezvous on machine 0 (default: the config file's, else 29500)")
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="autocast dtype for the Accelerator (default: the config file's, else no)")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=None, help="steps to accumulate before an optimizer step (default: the config file's, else 1)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where there is a GPU")
    parser.add_argument("--multi_gpu", action="store_true", help="data parallel training (the default with several processes)")
    parser.add_argument("--use_fsdp", action="store_true", help="shard the model with FSDP2")
    parser.add_argument("--fsdp_sharding_strategy", default=None, help="FULL_SHARD, SHARD_GRAD_OP or NO_SHARD (default: the config file's)")
    parser.add_argument("--fsdp_reshard_after_forward", default=None, help="free gathered parameters after each forward, true/false (default: the config file's)")
    parser.add_argument("--fsdp_auto_wrap_policy", default=None, help="TRANSFORMER_BASED_WRAP, SIZE_BASED_WRAP or NO_WRAP (default: the config file's)")
    parser.add_argument("--fsdp_transformer_layer_cls_to_wrap", default=None, help="comma-separated layer class names to shard one by one (default: the model's _no_split_modules)")
    parser.add_argument("--fsdp_min_num_params", type=int, default=None, help="smallest module size to wrap with SIZE_BASED_WRAP (default: the config file's)")
    parser.add_argument("--fsdp_offload_params", default=None, help="keep sharded parameters on the CPU, true/false (default: the config file's, else false)")
    parser.add_argument("--fsdp_state_dict_type", default=None, help="FULL_STATE_DICT or SHARDED_STATE_DICT for checkpoints (default: the config file's)")
    parser.add_argument("--fsdp_activation_checkpointing", default=None, help="recompute each wrapped layer's activations, true/false (default: the config file's)")
    parser.add_argument("--use_deepspeed", action="store_true", help="train with DeepSpeed ZeRO")
    parser.add_argument("--deepspeed_config_file", default=None, help="a DeepSpeed JSON config (default: built from the flags below)")
    parser.add_argument("--zero_stage", type=int, default=None, help="ZeRO stage 1, 2 or 3 (default: the config file's, else 2)")
    parser.add_argument("--offload_optimizer_device", default=None, help="none or cpu (default: the config file's, else none)")
    parser.add_argument("--offload_param_device", default=None, help="none or cpu, ZeRO-3 only (default: the config file's, else none)")
    parser.add_argument("--rdzv_backend", default=None, help="torchrun's rendezvous backend (default: static, c10d across machines)")
    parser.add_argument("--max_restarts", type=int, default=None, help="times torchrun restarts failed workers (default: 0)")
    parser.add_argument("--monitor_interval", type=float, default=None, help="seconds between torchrun's checks of its workers (default: torchrun's)")
    parser.add_argument("-m", "--module", action="store_true", help="the script is a module name (python -m)")
    parser.add_argument("--no_python", action="store_true", help="the script is an executable, not a Python file")
    parser.add_argument("training_script", help="the script to run (with its own arguments after it)")
    parser.add_argument("training_script_args", nargs=argparse.REMAINDER)


def config_from_args(args: argparse.Namespace):  # -> LaunchConfig
    from openformers.distributed.launch import LaunchConfig, default_config_file, read_config_file

    if args.config_file:
        config = read_config_file(args.config_file)
    elif default_config_file().is_file():
        config = read_config_file(default_config_file())
    else:
        config = LaunchConfig()
    for name in ("num_processes", "num_machines", "machine_rank", "main_process_ip", "main_process_port",
                 "mixed_precision", "gradient_accumulation_steps", "rdzv_backend", "max_restarts", "monitor_interval"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    if args.cpu:
        config.use_cpu = True
    if args.use_fsdp and args.use_deepspeed:
        raise ValueError("--use_fsdp and --use_deepspeed: choose one")
    if args.use_fsdp:
        config.distributed_type = "FSDP"
    elif args.use_deepspeed:
        config.distributed_type = "DEEPSPEED"
    elif args.multi_gpu or (config.distributed_type == "NO" and config.num_processes > 1):
        config.distributed_type = "MULTI_CPU" if config.use_cpu else "MULTI_GPU"
    for key in ("fsdp_sharding_strategy", "fsdp_reshard_after_forward", "fsdp_auto_wrap_policy",
                "fsdp_transformer_layer_cls_to_wrap", "fsdp_min_num_params", "fsdp_offload_params", "fsdp_state_dict_type",
                "fsdp_activation_checkpointing"):
        if getattr(args, key) is not None:
            config.fsdp_config[key] = getattr(args, key)
    for key in ("deepspeed_config_file", "zero_stage", "offload_optimizer_device", "offload_param_device"):
        if getattr(args, key) is not None:
            config.deepspeed_config[key] = getattr(args, key)
    return config


def run(args: argparse.Namespace) -> int:
    from openformers.distributed.launch import launch

    config = config_from_args(args)
    script = args.training_script
    if not (args.module or args.no_python) and not os.path.isfile(script):
        raise ValueError(f"{script}: no such training script")
    return launch(config, script, list(args.training_script_args), module=args.module, no_python=args.no_python)
