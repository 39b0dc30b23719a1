"""``write_checkpoint``: every file of a checkpoint reaches the disk before the rename that publishes it, and a
write that fails on the way publishes nothing and leaves the previous checkpoints byte for byte as they were."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from openformers.core import durable
from openformers.training.checkpointing import checkpoint_dirs, last_checkpoint, write_checkpoint
from openformers.training.state import TrainerState


def _optimizer():
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.full((4,), 0.5)
    opt.step()
    return opt


def _write(root: Path, step: int, payload: bytes = b"weights", save_model=None):
    def weights(d: Path) -> None:
        (d / "model.safetensors").write_bytes(payload)
        (d / "sub").mkdir()
        (d / "sub" / "extra.json").write_text("{}", encoding="utf-8")
    return write_checkpoint(root, step, save_model=save_model or weights, optimizer=_optimizer(), scheduler=None,
                            scaler=None, state=TrainerState(global_step=step), args_json="{}",
                            extra={"extra.pt": {"a": torch.arange(3)}})


def _contents(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("checkpoint-"))


def _record_flushes_and_renames(monkeypatch) -> list[tuple[str, ...]]:
    """From now on, every ``os.fsync`` (as ``("fsync", path)``) and ``os.replace`` (``("replace", src, dst)``), in
    order, in the list returned."""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd's file through /proc/self/fd")
def test_every_file_and_directory_is_flushed_before_the_rename(tmp_path, monkeypatch):
    events = _record_flushes_and_renames(monkeypatch)
    final = _write(tmp_path, 3)
    tmp = str(tmp_path / "tmp-checkpoint-3")
    publish = events.index(("replace", tmp, str(final)))
    flushed_before = {e[1] for e in events[:publish] if e[0] == "fsync"}
    # every file and directory of the checkpoint, under its temporary name
    wanted = {os.path.join(tmp, p.relative_to(final)) for p in final.rglob("*")} | {tmp}
    assert wanted - flushed_before == set()
    assert len(wanted) >= 8  # weights, sub/, sub/extra.json, optimizer, rng, args, extra.pt, trainer_state.json
    # and the directory that names it, after
    assert ("fsync", str(tmp_path)) in events[publish + 1:]


def test_a_write_that_fails_midway_publishes_nothing_and_keeps_the_previous(tmp_path):
    first = _write(tmp_path, 1)
    before = _contents(first)

    def half_then_full_disk(d: Path) -> None:
        (d / "model.safetensors").write_bytes(b"half of the")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space left"):
        _write(tmp_path, 2, save_model=half_then_full_disk)
    assert checkpoint_dirs(tmp_path) == [first] and last_checkpoint(tmp_path) == first
    assert _contents(first) == before
    assert _leftovers(tmp_path) == []  # no tmp-checkpoint-2 left behind either
    # and the same step written again over a complete one
    with pytest.raises(OSError, match="No space left"):
        _write(tmp_path, 1, save_model=half_then_full_disk)
    assert checkpoint_dirs(tmp_path) == [first] and _contents(first) == before and _leftovers(tmp_path) == []


def test_a_failing_flush_publishes_nothing(tmp_path, monkeypatch):
    first = _write(tmp_path, 1)
    before = _contents(first)
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:  # a file's data did not reach the disk
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        _write(tmp_path, 2, payload=b"new weights")
    with pytest.raises(OSError, match="Input/output error"):
        calls.clear()
        _write(tmp_path, 1, payload=b"new weights")
    assert checkpoint_dirs(tmp_path) == [first] and _contents(first) == before and _leftovers(tmp_path) == []


def test_a_failed_rename_over_the_same_step_puts_the_old_one_back(tmp_path, monkeypatch):
    first = _write(tmp_path, 1)
    before = _contents(first)
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(src).name == "tmp-checkpoint-1":
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"):
        _write(tmp_path, 1, payload=b"new weights")
    assert checkpoint_dirs(tmp_path) == [first] and _contents(first) == before and _leftovers(tmp_path) == []
    monkeypatch.setattr(os, "replace", real_replace)
    again = _write(tmp_path, 1, payload=b"new weights")  # and a later save of that step goes through
    assert (again / "model.safetensors").read_bytes() == b"new weights" and _leftovers(tmp_path) == []


def test_write_text_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    durable.write_text(target, "old")

    def fail(fd):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        durable.write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd's file through /proc/self/fd")
def test_save_pretrained_flushes_each_file_before_its_rename(tmp_path, monkeypatch):
    """Weights (sharded, with their index), config.json and generation_config.json written by ``save_pretrained``
    each reach the disk under their temporary name before the rename that publishes them."""
    import openformers as of

    model = of.LlamaForCausalLM(of.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, num_key_value_heads=1))
    events = _record_flushes_and_renames(monkeypatch)
    model.save_pretrained(tmp_path, max_shard_size="4KB")
    published = [e for e in events if e[0] == "replace"]
    names = {Path(dst).name for _, _, dst in published}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json"} <= names
    assert sum(n.startswith("model-0") for n in names) >= 2
    for _, src, dst in published:
        at = events.index(("replace", src, dst))
        assert ("fsync", src) in events[:at], f"{dst} was renamed into place before its data was flushed"
        assert ("fsync", str(tmp_path)) in events[at + 1:]


def test_a_failed_weight_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    import safetensors.torch

    import openformers as of

    model = of.LlamaForCausalLM(of.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, num_key_value_heads=1))
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def failing(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
