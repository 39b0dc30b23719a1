"""Fully sharded data parallel training with FSDP2 (``torch.distributed.fsdp.fully_shard``).

``TrainingArguments.fsdp`` names the sharding strategy; it maps onto FSDP2 as follows:

- ``full_shard``: parameters, gradients and optimizer state sharded; parameters are freed
  again after each block's forward (``reshard_after_forward=True``).
- ``shard_grad_op``: as above, but parameters stay gathered between forward and backward
  (``reshard_after_forward=False``), trading memory for one all-gather less per block.
- ``hybrid_shard`` / ``hybrid_shard_zero2``: shard within a node, replicate across nodes
  (a 2-D device mesh), with full_shard / shard_grad_op semantics.
- ``no_shard``: plain data parallel training (DDP).
- ``offload``: parameters, gradients and optimizer state live in CPU memory between uses
  (``CPUOffloadPolicy``); only meaningful when training on an accelerator.
- ``auto_wrap``: each transformer block is its own FSDP unit. This is always done: the blocks
  are the classes in ``fsdp_config["transformer_layer_cls_to_wrap"]``, else the model's
  ``_no_split_modules``, else the items of the model's repeated layer lists; or, with
  ``fsdp_config["min_num_params"]``, every sub-module holding at least that many parameters.

Checkpoints hold the full (unsharded) model in the usual layout, written by the main process,
and the full optimizer state keyed by parameter name, so a sharded run can resume on any
number of processes and ``from_pretrained`` loads the weights. With
``fsdp_config["state_dict_type"] = "SHARDED_STATE_DICT"`` (the Accelerator's default) nothing is
gathered: each process writes its shards of model and optimizer as a torch.distributed.checkpoint
directory (``pytorch_model_fsdp_0/``, ``optimizer_0/``), which loads on any number of processes too.
The same module serves the Trainer and the Accelerator (``FullyShardedDataParallelPlugin``).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHARDED_MODEL_NAME = "pytorch_model_fsdp"  # Accelerate's name for a sharded model checkpoint directory
STRATEGIES = ("full_shard", "shard_grad_op", "hybrid_shard", "hybrid_shard_zero2", "no_shard")
OPTIONS = STRATEGIES + ("offload", "auto_wrap")
# fsdp_config keys that change what is built here
_CONFIG_KEYS = ("transformer_layer_cls_to_wrap", "min_num_params", "reshard_after_forward", "activation_checkpointing",
                "offload_params", "fsdp_version", "state_dict_type", "xla")
# keys of FSDP1 tuning knobs that FSDP2 has no switch for (its behaviour is fixed): accepted, no effect
_FSDP1_ONLY = ("backward_prefetch", "forward_prefetch", "limit_all_gathers", "use_orig_params", "sync_module_states",
               "cpu_ram_efficient_loading", "auto_wrap_policy")


@dataclass(frozen=True)
class FsdpPlan:
    """What to build, read from ``fsdp`` and ``fsdp_config``."""

    reshard_after_forward: bool
    hybrid: bool
    offload: bool
    layer_classes: tuple[str, ...]
    min_num_params: int
    activation_checkpointing: bool
    bf16: bool
    wrap: bool = True  # False: one unit, the whole model
    sharded_checkpoint: bool = False  # state_dict_type SHARDED_STATE_DICT: torch.distributed.checkpoint directories


def _read_config(raw: dict[str, Any] | str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        path = Path(raw)
        if not path.is_file():
            raise ValueError(f"fsdp_config={raw!r} is neither a dict nor a JSON file")
        raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"fsdp_config must be a dict or a JSON file path, got {type(raw).__name__}")
    # accelerate-style names carry an "fsdp_" prefix
    return {(k[5:] if k.startswith("fsdp_") and k != "fsdp_version" else k): v for k, v in raw.items()}


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


def plan_from_args(args: Any) -> FsdpPlan | None:
    """Check ``args.fsdp``/``args.fsdp_config``; None means no sharding (no fsdp, or ``no_shard``)."""
    options = list(args.fsdp or [])
    if not options:
        return None
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise ValueError(f"fsdp={' '.join(options)!r}: unknown option(s) {unknown}; choose from {list(OPTIONS)}")
    strategies = [o for o in options if o in STRATEGIES]
    if len(strategies) > 1:
        raise ValueError(f"fsdp={' '.join(options)!r} names several sharding strategies {strategies}; choose one")
    strategy = strategies[0] if strategies else "full_shard"
    config = _read_config(args.fsdp_config)
    unknown_keys = sorted(set(config) - set(_CONFIG_KEYS) - set(_FSDP1_ONLY))
    if unknown_keys:
        raise ValueError(f"fsdp_config has unknown keys {unknown_keys}; known keys are {sorted(_CONFIG_KEYS + _FSDP1_ONLY)}")
    if str(config.get("fsdp_version", 2)) != "2":
        raise ValueError(f"fsdp_config fsdp_version={config['fsdp_version']!r}: the Trainer shards with FSDP2 "
                         f"(fully_shard); set fsdp_version to 2 or leave it out")
    if _flag(config.get("xla", False)):
        raise ValueError("fsdp_config xla=True: XLA sharding is not supported; leave xla out")
    state_dict_type = str(config.get("state_dict_type", "FULL_STATE_DICT")).upper()
    if state_dict_type not in ("FULL_STATE_DICT", "SHARDED_STATE_DICT"):
        raise ValueError(f"fsdp_config state_dict_type={config['state_dict_type']!r}: choose FULL_STATE_DICT (the whole "
                         f"model, which from_pretrained reads) or SHARDED_STATE_DICT (each process its shards)")
    offload = "offload" in options or _flag(config.get("offload_params", False))
    if strategy == "no_shard":
        if offload:
            raise ValueError("fsdp='no_shard offload': offloading needs sharding; use 'full_shard offload'")
        return None
    if args.fp16:
        raise ValueError("fsdp with fp16=True is not supported (float16 needs a sharded gradient scaler); "
                         "use bf16=True for mixed precision")
    if args.fp16_full_eval or args.bf16_full_eval:
        raise ValueError("fsdp with fp16_full_eval/bf16_full_eval is not supported: sharded parameters cannot be "
                         "cast in place; use bf16=True, which also evaluates in bfloat16")
    if offload and (args.use_cpu or not torch.cuda.is_available()):
        raise ValueError("fsdp 'offload' moves parameters to CPU memory between uses, but this run already trains "
                         "on the CPU; drop 'offload' (and offload_params)")
    layers = config.get("transformer_layer_cls_to_wrap") or ()
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    min_params = int(config.get("min_num_params", 0) or 0)
    if layers and min_params:
        raise ValueError("fsdp_config: give transformer_layer_cls_to_wrap or min_num_params, not both")
    reshard = strategy in ("full_shard", "hybrid_shard")
    if "reshard_after_forward" in config:
        reshard = _flag(config["reshard_after_forward"])
    return FsdpPlan(reshard_after_forward=reshard, hybrid=strategy.startswith("hybrid"), offload=offload,
                    layer_classes=layers, min_num_params=min_params,
                    activation_checkpointing=_flag(config.get("activation_checkpointing", False)), bf16=bool(args.bf16),
                    sharded_checkpoint=state_dict_type == "SHARDED_STATE_DICT")


def is_sharded(model: nn.Module) -> bool:
    # a sharded model means torch.distributed.fsdp is imported already: never import it (~1 s) just to ask
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def _block_modules(model: nn.Module, plan: FsdpPlan) -> list[nn.Module]:
    """The sub-modules that become their own FSDP units (innermost first)."""
    if plan.min_num_params:
        return _by_size(model, plan.min_num_params)
    names = plan.layer_classes or tuple(getattr(model, "_no_split_modules", ()) or ())
    if names:
        found = [m for m in model.modules() if type(m).__name__ in names and m is not model]
        missing = [n for n in names if not any(type(m).__name__ == n for m in found)]
        if plan.layer_classes and missing:
            present = sorted({type(m).__name__ for m in model.modules()})
            raise ValueError(f"fsdp_config transformer_layer_cls_to_wrap: no module of class {missing} in "
                             f"{type(model).__name__}; its module classes are {present}")
        if found:
            return found
    # no declared block class: the items of every list of identical layers
    blocks: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1 and len({type(m) for m in module}) == 1:
            blocks.extend(module)
    return blocks


def _by_size(model: nn.Module, threshold: int) -> list[nn.Module]:
    """Post-order: a module whose not-yet-wrapped parameters reach ``threshold`` becomes a unit.
    Modules holding a parameter shared with the outside (tied embeddings) stay with the root."""
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    shared = {pid for pid, n in owners.items() if n > 1}
    chosen: list[nn.Module] = []

    def visit(module: nn.Module) -> int:
        count = sum(visit(child) for child in module.children())
        count += sum(p.numel() for p in module.parameters(recurse=False))
        # containers have no forward of their own to gather parameters in
        if module is model or count < threshold or isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            return count
        if any(id(p) in shared for p in module.parameters()):
            return count
        chosen.append(module)
        return 0

    visit(model)
    return chosen


def _mesh(plan: FsdpPlan, device: torch.device) -> Any:
    from torch.distributed.device_mesh import init_device_mesh

    world = torch.distributed.get_world_size()
    if not plan.hybrid:
        return init_device_mesh(device.type, (world,))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world % local:
        raise ValueError(f"hybrid sharding needs the same number of processes on every node: world size {world}, "
                         f"{local} on this node")
    return init_device_mesh(device.type, (world // local, local), mesh_dim_names=("replicate", "shard"))


def shard_model(model: nn.Module, plan: FsdpPlan, device: torch.device) -> nn.Module:
    """Shard ``model`` in place: each block, then the root (which keeps embeddings and heads)."""
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        fully_shard,
    )

    if is_sharded(model):
        return model
    if plan.activation_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
    # every process starts from the main process's weights, as DDP does
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(tensor.data, src=0)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if plan.bf16 else MixedPrecisionPolicy()
    kwargs: dict[str, Any] = {"mesh": _mesh(plan, device), "mp_policy": mp}
    if plan.offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for block in _block_modules(model, plan) if plan.wrap else []:
        fully_shard(block, reshard_after_forward=plan.reshard_after_forward, **kwargs)
    # the root's parameters are needed again at once by backward: never reshard them
    fully_shard(model, reshard_after_forward=False, **kwargs)
    return model


def _options(all_ranks: bool = False) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # cpu_offload gathers onto the main process only; all_ranks gives every process a copy
    return StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks)


def full_model_state(model: nn.Module, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded state dict on the main process (empty elsewhere). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(all_ranks))
    return {k: v.cpu() for k, v in state.items()} if all_ranks else state


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, all_ranks: bool = False) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, unsharded, on the main process. Every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(all_ranks))


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load a full state dict (read by every process) into the sharded model; returns (missing, unexpected)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
    )

    result = set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    return list(result.missing_keys), list(result.unexpected_keys)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an optimizer state keyed by parameter name (as :func:`full_optimizer_state` gives) into any model."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=is_sharded(model)))


def save_sharded_model(model: nn.Module, directory: Path) -> None:
    """Each process writes its shards of ``model`` (a torch.distributed.checkpoint directory). Every process calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    dcp.save(get_model_state_dict(model), checkpoint_id=str(directory))


def save_sharded_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """The optimizer state keyed by parameter name, each process its shards. Every process calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(directory))


def load_sharded_model(model: nn.Module, directory: Path) -> None:
    """Read a directory written by :func:`save_sharded_model` into ``model``, sharded over any number of
    processes or not sharded at all (DCP reshards on load)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = get_model_state_dict(model)
    dcp.load(state, checkpoint_id=str(directory))
    set_model_state_dict(model, state)


def load_sharded_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    holder = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(holder, checkpoint_id=str(directory))
    set_optimizer_state_dict(model, optimizer, holder["optimizer"])


def architecture_name(model: nn.Module) -> str:
    """The model's own class name (fully_shard swaps in a subclass named ``FSDP<name>``)."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(model)
    if issubclass(cls, FSDPModule):
        cls = next(b for b in cls.__mro__[1:] if not issubclass(b, FSDPModule) and issubclass(b, nn.Module))
    return cls.__name__


_STRATEGY_NAMES = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP", "3": "NO_SHARD", "4": "HYBRID_SHARD", "5": "HYBRID_SHARD_ZERO2"}


@dataclass
class FullyShardedDataParallelPlugin:
    """FSDP2 settings for the Accelerator, with Accelerate's names; fields left None come from the
    ``FSDP_*`` environment variables ``openformers launch`` sets from an Accelerate config file.

    ``reshard_after_forward`` (or ``sharding_strategy`` "FULL_SHARD" / "SHARD_GRAD_OP" /
    "HYBRID_SHARD" / "HYBRID_SHARD_ZERO2"), ``auto_wrap_policy`` ("transformer_based_wrap":
    ``transformer_cls_names_to_wrap``, else the model's ``_no_split_modules``; "size_based_wrap":
    ``min_num_params``), ``cpu_offload``, ``activation_checkpointing``, and ``state_dict_type``:
    "SHARDED_STATE_DICT" (``save_state`` writes a torch.distributed.checkpoint that loads on any
    number of processes) or "FULL_STATE_DICT" (the full model, written by the main process).
    """

    fsdp_version: int | None = None
    sharding_strategy: str | None = None
    reshard_after_forward: bool | str | None = None
    auto_wrap_policy: str | None = None
    transformer_cls_names_to_wrap: list[str] | str | None = None
    min_num_params: int | None = None
    cpu_offload: bool | None = None
    activation_checkpointing: bool | None = None
    state_dict_type: str | None = None
    mixed_precision_policy: Any = None
    cpu_ram_efficient_loading: bool | None = None
    sync_module_states: bool | None = None
    use_orig_params: bool | None = None
    forward_prefetch: bool | None = None
    backward_prefetch: Any = None

    def __post_init__(self) -> None:
        env = os.environ.get
        if self.fsdp_version is None:
            self.fsdp_version = int(env("FSDP_VERSION", 2))
        if int(self.fsdp_version) != 2:
            raise ValueError(f"FullyShardedDataParallelPlugin(fsdp_version={self.fsdp_version}): only FSDP2 "
                             f"(torch.distributed.fsdp.fully_shard) is supported; set fsdp_version=2")
        if self.sharding_strategy is None:
            self.sharding_strategy = env("FSDP_SHARDING_STRATEGY")
        if self.reshard_after_forward is None and env("FSDP_RESHARD_AFTER_FORWARD") is not None:
            self.reshard_after_forward = env("FSDP_RESHARD_AFTER_FORWARD")
        if self.sharding_strategy is not None:
            name = str(getattr(self.sharding_strategy, "name", self.sharding_strategy)).upper()
            name = _STRATEGY_NAMES.get(name, name)
            if name.lower() not in STRATEGIES:
                raise ValueError(f"sharding_strategy={self.sharding_strategy!r}: choose one of "
                                 f"{[s.upper() for s in STRATEGIES]}")
            self.sharding_strategy = name
            if self.reshard_after_forward is None:
                self.reshard_after_forward = name in ("FULL_SHARD", "HYBRID_SHARD")
        if isinstance(self.reshard_after_forward, str):
            value = self.reshard_after_forward.upper()
            self.reshard_after_forward = value in ("FULL_SHARD", "HYBRID_SHARD") or _flag(value)
        if self.reshard_after_forward is None:
            self.reshard_after_forward = True
        if self.auto_wrap_policy is None:
            self.auto_wrap_policy = env("FSDP_AUTO_WRAP_POLICY", "transformer_based_wrap")
        self.auto_wrap_policy = str(self.auto_wrap_policy).lower()
        if self.auto_wrap_policy not in ("transformer_based_wrap", "size_based_wrap", "no_wrap"):
            raise ValueError(f"auto_wrap_policy={self.auto_wrap_policy!r}: choose 'transformer_based_wrap', "
                             f"'size_based_wrap' or 'no_wrap'")
        if self.transformer_cls_names_to_wrap is None and env("FSDP_TRANSFORMER_CLS_TO_WRAP"):
            self.transformer_cls_names_to_wrap = env("FSDP_TRANSFORMER_CLS_TO_WRAP")
        if isinstance(self.transformer_cls_names_to_wrap, str):
            self.transformer_cls_names_to_wrap = [n.strip() for n in self.transformer_cls_names_to_wrap.split(",") if n.strip()]
        if self.min_num_params is None:
            self.min_num_params = int(env("FSDP_MIN_NUM_PARAMS", 0))
        if self.cpu_offload is None:
            self.cpu_offload = _flag(env("FSDP_OFFLOAD_PARAMS", "false"))
        if self.activation_checkpointing is None:
            self.activation_checkpointing = _flag(env("FSDP_ACTIVATION_CHECKPOINTING", "false"))
        if self.state_dict_type is None:
            self.state_dict_type = env("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT")
        self.state_dict_type = str(getattr(self.state_dict_type, "name", self.state_dict_type)).upper()
        if self.state_dict_type not in ("SHARDED_STATE_DICT", "FULL_STATE_DICT"):
            raise ValueError(f"state_dict_type={self.state_dict_type!r}: choose 'SHARDED_STATE_DICT' or 'FULL_STATE_DICT'")

    def to_plan(self, bf16: bool) -> FsdpPlan:
        if self.cpu_offload and not torch.cuda.is_available():
            raise ValueError("FullyShardedDataParallelPlugin(cpu_offload=True) moves parameters to CPU memory "
                             "between uses, but this run trains on the CPU; drop cpu_offload")
        if self.sharding_strategy == "NO_SHARD":
            raise ValueError("sharding_strategy='NO_SHARD' is plain data parallel training: leave fsdp_plugin out")
        wrap = self.auto_wrap_policy
        layers = tuple(self.transformer_cls_names_to_wrap or ()) if wrap == "transformer_based_wrap" else ()
        if wrap == "size_based_wrap" and not self.min_num_params:
            raise ValueError("auto_wrap_policy='size_based_wrap' needs min_num_params > 0")
        return FsdpPlan(reshard_after_forward=bool(self.reshard_after_forward),
                        hybrid=str(self.sharding_strategy or "").startswith("HYBRID"), offload=bool(self.cpu_offload),
                        layer_classes=layers, min_num_params=int(self.min_num_params or 0) if wrap == "size_based_wrap" else 0,
                        activation_checkpointing=bool(self.activation_checkpointing), bf16=bf16,
                        wrap=wrap != "no_wrap")
