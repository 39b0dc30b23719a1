"""device_map: a device, "auto", and a module -> device mapping with input-moving hooks."""
from __future__ import annotations

import pytest
import torch

from openformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from openformers.core.placement import auto_device_map


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2)
    path = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("device_map", ["cpu", "auto", torch.device("cpu")])
def test_single_device(saved, device_map):
    model = AutoModelForCausalLM.from_pretrained(saved, device_map=device_map)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.hf_device_map


def test_auto_map_on_this_machine(saved):
    model = AutoModelForCausalLM.from_pretrained(saved)
    expected = {"": "cuda:0"} if torch.cuda.device_count() == 1 else ({"": "cpu"} if not torch.cuda.is_available() else None)
    if expected is not None:
        assert auto_device_map(model) == expected


def test_module_map_moves_inputs(saved):
    ids = torch.tensor([[1, 2, 3, 4]])
    reference = AutoModelForCausalLM.from_pretrained(saved)(ids).logits
    mapping = {"": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(saved, device_map=mapping)
    assert model.hf_device_map == mapping
    torch.testing.assert_close(model(ids).logits, reference)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_auto_spreads_layers_over_gpus(saved):
    model = AutoModelForCausalLM.from_pretrained(saved, device_map="auto")
    devices = {str(d) for d in model.hf_device_map.values()}
    assert {"cuda:0", "cuda:1"} <= devices
