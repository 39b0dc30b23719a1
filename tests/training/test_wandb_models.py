"""WANDB_LOG_MODEL in wandb offline mode: the artifact records of the offline run file.

The run file (``run-<id>.wandb``) is a LevelDB-style log of ``wandb.proto`` Record messages:
a 7-byte header, then 32 KiB blocks of chunks (crc32, length, type) that spell the records.
"""
from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest

from openformers import Trainer, TrainingArguments
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2

_BLOCK, _CHUNK_HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_run_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    records, pending, pos = [], b"", 7
    while pos + _CHUNK_HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK_HEADER:  # block trailer: zero padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _CHUNK_HEADER])
        if kind == 0:
            pos += room
            continue
        pending += data[pos + _CHUNK_HEADER : pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _artifacts(tmp_path: Path, monkeypatch, log_model: str) -> tuple[list, Path]:
    wandb = pytest.importorskip("wandb")
    wandb.teardown()  # wandb keeps its settings (WANDB_DIR) per process: read them afresh
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "openformers-test",
                       "WANDB_LOG_MODEL": log_model, "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    args = TrainingArguments(str(out), max_steps=2, per_device_train_batch_size=4, logging_steps=1, save_steps=1,
                             disable_tqdm=True, report_to="wandb", run_name="tiny-run")
    Trainer(model=tiny_gpt2(), args=args, train_dataset=ragged_lm_data(8), data_collator=pad_collator).train()
    wandb.teardown()  # waits for wandb's service process to finish writing the run file
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = read_run_records(run_file)
    assert any(r.WhichOneof("record_type") == "run" for r in records)
    return [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"], out


def _md5(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_log_model_checkpoint_uploads_every_checkpoint(tmp_path, monkeypatch):
    artifacts, out = _artifacts(tmp_path, monkeypatch, "checkpoint")
    assert [a.type for a in artifacts] == ["model", "model"]
    assert all(a.name.startswith("checkpoint-") for a in artifacts)
    assert [[x for x in a.aliases if x != "latest"] for a in artifacts] == [["checkpoint-1"], ["checkpoint-2"]]
    for artifact, step in zip(artifacts, (1, 2)):
        entries = {c.path: c.digest for c in artifact.manifest.contents}
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(entries)
        assert entries["model.safetensors"] == _md5(out / f"checkpoint-{step}" / "model.safetensors")


def test_log_model_end_uploads_the_final_model(tmp_path, monkeypatch):
    artifacts, out = _artifacts(tmp_path, monkeypatch, "end")
    assert len(artifacts) == 1 and artifacts[0].name.startswith("model-") and "latest" in artifacts[0].aliases
    entries = {c.path for c in artifacts[0].manifest.contents}
    assert {"config.json", "model.safetensors"} <= entries and "optimizer.pt" not in entries
    assert not (out / "wandb-final-model").exists()


def test_log_model_false_uploads_nothing(tmp_path, monkeypatch):
    artifacts, _ = _artifacts(tmp_path, monkeypatch, "false")
    assert artifacts == []
