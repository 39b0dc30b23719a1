"""``Accelerator.save_state`` / ``load_state``: everything a run needs to continue exactly.

File names follow Accelerate's (``model.safetensors``, ``optimizer.bin``, ``scheduler.bin``,
``scaler.pt``, ``random_states_<rank>.pkl``, ``pytorch_model_fsdp_0/``, ...), the ``<i>`` suffix
counting the second and later objects of a kind. Sidecars are written with ``torch.save`` and read
with ``weights_only=True``: tensors and plain containers only. The directory is written under a
temporary name and renamed when complete, so a crash never leaves a half-written checkpoint under
the final name. FSDP models with ``state_dict_type="SHARDED_STATE_DICT"`` write model and optimizer
as torch.distributed.checkpoint directories (each process its shards), which load on any number
of processes, sharded or not.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from openformers.core import durable
from openformers.distributed import fsdp as fsdp_lib
from openformers.distributed import state as dist

if TYPE_CHECKING:
    from openformers.distributed.accelerator import Accelerator


def _name(stem: str, index: int, suffix: str) -> str:
    return f"{stem}{'' if index == 0 else f'_{index}'}{suffix}"


def _sharded(acc: "Accelerator", model: torch.nn.Module) -> bool:
    plugin = acc.fsdp_plugin
    return (plugin is not None and plugin.state_dict_type == "SHARDED_STATE_DICT"
            and fsdp_lib.is_sharded(dist.unwrap_model(model)))


def _owner_model(acc: "Accelerator", optimizer: Any) -> torch.nn.Module | None:
    params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for model in acc._models:
        if any(id(p) in params for p in model.parameters()):
            return dist.unwrap_model(model)
    return None


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as a checkpoint file of tensors and plain values: {exc}") from exc


def save_accelerator_state(acc: "Accelerator", output_dir: Path, safe_serialization: bool = True) -> Path:
    from openformers.training.checkpointing import capture_rng_state

    tmp = output_dir.with_name(f"tmp-{output_dir.name}")
    if acc.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    if acc.deepspeed_engine is not None:
        from openformers.distributed.deepspeed import save_engine_state

        save_engine_state(acc, tmp)
    main = acc.is_main_process
    if acc.deepspeed_engine is None:
        for i, model in enumerate(acc._models):
            inner = dist.unwrap_model(model)
            if _sharded(acc, model):
                fsdp_lib.save_sharded_model(inner, tmp / f"{fsdp_lib.SHARDED_MODEL_NAME}_{i}")
                continue
            state = fsdp_lib.full_model_state(inner) if fsdp_lib.is_sharded(inner) else inner.state_dict()
            if main:
                stem = _name("model", i, "")
                if safe_serialization:
                    from safetensors.torch import save_file

                    save_file(_untied(state), str(tmp / f"{stem}.safetensors"), metadata={"format": "pt"})
                else:
                    torch.save(state, tmp / f"{_name('pytorch_model', i, '')}.bin")
        for i, opt in enumerate(acc._optimizers):
            model = _owner_model(acc, opt)
            if model is not None and _sharded(acc, model):
                fsdp_lib.save_sharded_optimizer(model, opt.optimizer, tmp / _name("optimizer", i, ""))
                continue
            if model is not None and fsdp_lib.is_sharded(model):
                state = fsdp_lib.full_optimizer_state(model, opt.optimizer)
            else:
                state = opt.state_dict()
            if main:
                torch.save(state, tmp / _name("optimizer", i, ".bin"))
    if main:
        for i, sched in enumerate(acc._schedulers):
            torch.save(sched.state_dict(), tmp / _name("scheduler", i, ".bin"))
        for i, loader in enumerate(acc._dataloaders):
            torch.save(loader.state_dict(), tmp / _name("dl_state_dict", i, ".bin"))
        if acc.scaler is not None:
            torch.save(acc.scaler.state_dict(), tmp / "scaler.pt")
        for i, obj in enumerate(acc._custom_objects):
            torch.save(obj.state_dict(), tmp / f"custom_checkpoint_{i}.pkl")
    rng = capture_rng_state()
    rng["step"] = acc.step
    torch.save(rng, tmp / f"random_states_{acc.process_index}.pkl")
    acc.wait_for_everyone()
    if main:  # every file flushed to the disk, then renamed into place (core/durable.py)
        durable.publish_dir(tmp, output_dir, old=output_dir.with_name(f"old-{output_dir.name}"))
    acc.wait_for_everyone()
    return output_dir


def _untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): the later names get copies."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.device.type != "meta" else (id(v), 0)
        out[k] = v.clone().contiguous() if key in seen else v.contiguous()
        seen.add(key)
    return out


def load_accelerator_state(acc: "Accelerator", input_dir: Path) -> None:
    from openformers.training.checkpointing import restore_rng_state

    if not input_dir.is_dir():
        raise ValueError(f"load_state: {input_dir} is not a directory written by save_state")
    if acc.deepspeed_engine is not None:
        from openformers.distributed.deepspeed import load_engine_state

        load_engine_state(acc, input_dir)
    else:
        for i, model in enumerate(acc._models):
            inner = dist.unwrap_model(model)
            dcp_dir = input_dir / f"{fsdp_lib.SHARDED_MODEL_NAME}_{i}"
            if dcp_dir.is_dir():
                fsdp_lib.load_sharded_model(inner, dcp_dir)
                continue
            state = _read_weights(input_dir, i)
            if fsdp_lib.is_sharded(inner):
                missing, unexpected = fsdp_lib.load_full_model_state(inner, state)
            else:
                result = inner.load_state_dict(state, strict=False)
                missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
            if missing or unexpected:
                raise ValueError(f"load_state: {input_dir} does not fit model {i}: missing {missing}, unexpected {unexpected}")
        for i, opt in enumerate(acc._optimizers):
            model = _owner_model(acc, opt)
            dcp_dir = input_dir / _name("optimizer", i, "")
            if dcp_dir.is_dir():
                if model is None:
                    raise ValueError(f"load_state: optimizer {i} holds no parameter of a prepared model")
                fsdp_lib.load_sharded_optimizer(model, opt.optimizer, dcp_dir)
                continue
            path = input_dir / _name("optimizer", i, ".bin")
            if not path.is_file():
                raise ValueError(f"load_state: {input_dir} has no {path.name} for optimizer {i}")
            state = _load(path)
            if model is not None and (fsdp_lib.is_sharded(model) or any(isinstance(k, str) for k in state.get("state", {}))):
                fsdp_lib.load_optimizer_state(model, opt.optimizer, state)
            else:
                opt.load_state_dict(state)
    for i, sched in enumerate(acc._schedulers):
        path = input_dir / _name("scheduler", i, ".bin")
        if path.is_file():
            sched.load_state_dict(_load(path))
    for i, loader in enumerate(acc._dataloaders):
        path = input_dir / _name("dl_state_dict", i, ".bin")
        if path.is_file():
            loader.load_state_dict(_load(path))
    if acc.scaler is not None and (input_dir / "scaler.pt").is_file():
        acc.scaler.load_state_dict(_load(input_dir / "scaler.pt"))
    for i, obj in enumerate(acc._custom_objects):
        path = input_dir / f"custom_checkpoint_{i}.pkl"
        if path.is_file():
            obj.load_state_dict(_load(path))
    rng_path = input_dir / f"random_states_{acc.process_index}.pkl"
    if rng_path.is_file():
        rng = _load(rng_path)
        acc.step = int(rng.pop("step", 0))
        restore_rng_state(rng)
    elif acc.is_main_process:
        import warnings

        warnings.warn(f"load_state: {input_dir} has no random_states_{acc.process_index}.pkl (saved by fewer "
                      f"processes): this process's random number generators keep their state", stacklevel=3)


def _read_weights(directory: Path, index: int) -> dict[str, torch.Tensor]:
    from openformers.core.checkpoint import find_weight_files, iter_checkpoint

    safe = directory / f"{_name('model', index, '')}.safetensors"
    if safe.is_file():
        from safetensors.torch import load_file

        return load_file(str(safe))
    binary = directory / f"{_name('pytorch_model', index, '')}.bin"
    if binary.is_file():
        return _load(binary)
    if index == 0:
        return dict(iter_checkpoint(find_weight_files(directory)))
    raise ValueError(f"load_state: {directory} has no weights for model {index} ({safe.name})")
