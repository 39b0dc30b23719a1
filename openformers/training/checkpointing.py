"""Checkpoint directories: written whole into a temporary name, flushed to the disk, then renamed into place.

Every file of a checkpoint and its directory reach the disk (``fsync``) before the rename that publishes
it (``core/durable.py``), so after a crash or a power loss ``checkpoint-<step>`` is whole or absent, and the
previous checkpoint is untouched either way. A checkpoint is complete when its directory is named ``checkpoint-<step>`` and holds
``trainer_state.json``; anything else (``tmp-checkpoint-*`` left by a crash) is ignored by
resume and cleaned up by the next save. Sidecar files hold only tensors and plain
containers and are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openformers.core import durable
from openformers.training.state import STATE_NAME

PREFIX = "checkpoint"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
RNG_NAME = "rng_state.pth"
ARGS_NAME = "training_args.json"
_PATTERN = re.compile(rf"^{PREFIX}-(\d+)$")


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _PATTERN.match(p.name)
        if m and p.is_dir() and (p / STATE_NAME).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def capture_rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "cpu": torch.get_rng_state(),
        # not a generator: the CPU reductions split their work by thread, so the resumed run continues the
        # same numbers only with the same count (restore_rng_state warns when it differs)
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved_threads = state.get("threads")
    if isinstance(saved_threads, int) and saved_threads != torch.get_num_threads():
        warnings.warn(f"the checkpoint was written by a run with {saved_threads} CPU threads and this one has "
                      f"{torch.get_num_threads()}: CPU reductions split their work by thread, so the resumed run equals "
                      f"an uninterrupted one only to rounding; call torch.set_num_threads({saved_threads}) before "
                      f"train() for the same bits", stacklevel=2)


def write_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    *,
    save_model: Any,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    state: Any,
    args_json: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically and durably (see the module docstring); ``save_model(dir)`` writes
    the weights. An error on the way leaves no new directory and the existing checkpoints as they were."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}-{step}"
    tmp = root / f"tmp-{PREFIX}-{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_model(tmp)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_NAME)
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_NAME)
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / SCALER_NAME)
        torch.save(capture_rng_state(), tmp / RNG_NAME)
        (tmp / ARGS_NAME).write_text(args_json, encoding="utf-8")
        for name, value in (extra or {}).items():
            torch.save(value, tmp / name)
        state.save_to_json(tmp / STATE_NAME)  # written last: marks the checkpoint complete
        # re-saving the same step (e.g. the last step twice) moves the old one to old-checkpoint-<step> first
        durable.publish_dir(tmp, final, old=root / f"old-{PREFIX}-{step}")
    except BaseException:
        # an error while writing (a full disk, a save_model that raises): nothing is published and the
        # previous checkpoints stay as they are (a crash leaves tmp-checkpoint-* for the next save to remove)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_sidecar(path: Path) -> Any:
    """Read a checkpoint sidecar without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as a checkpoint file of tensors and plain values: {exc}") from exc


def rotate_checkpoints(output_dir: str | os.PathLike, limit: int | None, keep: str | None = None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``limit``, never ``keep`` (the best one)."""
    removed: list[Path] = []
    root = Path(output_dir)
    for leftover in list(root.glob(f"tmp-{PREFIX}-*")) + list(root.glob(f"old-{PREFIX}-*")):
        shutil.rmtree(leftover, ignore_errors=True)
    if not limit:
        return removed
    dirs = checkpoint_dirs(output_dir)
    keep_path = Path(keep).resolve() if keep else None
    # with a best checkpoint and limit 1, keep the best and the newest (to resume from)
    effective = max(limit, 2) if keep_path is not None and limit == 1 and dirs and dirs[-1].resolve() != keep_path else limit
    candidates = [d for d in dirs if d.resolve() != keep_path]
    excess = len(dirs) - effective
    for d in candidates[: max(0, excess)]:
        if d == dirs[-1]:
            break
        shutil.rmtree(d)
        removed.append(d)
    return removed
