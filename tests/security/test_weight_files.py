"""Weight and adapter files that are truncated, not JSON or pickled objects: ``CheckpointError``
or ``ValueError`` naming the file, never a raw parser error; nothing in a pickle is run."""
from __future__ import annotations

import json
import os

import pytest
import torch

from openformers.core.checkpoint import CheckpointError, load_bin_file


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo PWNED",))


def test_pickle_refusal_shows_the_cause_without_the_unsafe_advice(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, path)
    with pytest.raises(CheckpointError) as info:
        load_bin_file(path)
    message = str(info.value)
    assert str(path) in message and "system" in message and "GLOBAL" in message
    assert "weights_only" not in message


@pytest.fixture
def adapter_dir(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "adapter"
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["c_attn"]}))
    save_file({"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": torch.zeros(2, 16)}, str(path / "adapter_model.safetensors"))
    return path


def test_truncated_adapter_weights_name_the_file(adapter_dir):
    from openformers.peft.save_and_load import load_adapter_state

    file = adapter_dir / "adapter_model.safetensors"
    file.write_bytes(file.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="adapter_model.safetensors"):
        load_adapter_state(adapter_dir)


def test_pickled_adapter_bin_is_refused(adapter_dir):
    from openformers.peft.save_and_load import load_adapter_state

    (adapter_dir / "adapter_model.safetensors").unlink()
    torch.save({"x": _Evil()}, adapter_dir / "adapter_model.bin")
    with pytest.raises(CheckpointError, match="adapter_model.bin holds pickled objects"):
        load_adapter_state(adapter_dir)


@pytest.mark.parametrize("content", [b'{"peft_type": "LORA", "r": ', b"\xff\xfe", b"[1, 2]", b"[" * 100_000],
                         ids=["truncated", "not-utf8", "array", "nested"])
def test_broken_adapter_config_names_the_file(adapter_dir, content):
    from openformers.peft.config import PeftConfig

    (adapter_dir / "adapter_config.json").write_bytes(content)
    with pytest.raises(ValueError, match="adapter_config.json"):
        PeftConfig.from_pretrained(adapter_dir)


def test_adapter_config_with_fields_of_the_wrong_type_names_the_file(adapter_dir):
    from openformers.peft.config import PeftConfig

    (adapter_dir / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": "eight"}))
    with pytest.raises(ValueError, match="adapter_config.json.*r = .eight. must be"):
        PeftConfig.from_pretrained(adapter_dir)


def test_truncated_model_weights_name_the_file(tmp_path, tiny_gpt2_dir):
    import shutil

    from openformers.models.gpt2 import GPT2LMHeadModel

    model = tmp_path / "m"
    shutil.copytree(tiny_gpt2_dir, model)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        GPT2LMHeadModel.from_pretrained(model)
