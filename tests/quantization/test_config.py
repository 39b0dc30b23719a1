"""BitsAndBytesConfig: defaults, serialisation (same as transformers) and bad input."""
from __future__ import annotations

import pytest
import torch

from openformers import BitsAndBytesConfig


def _hf_dict(cfg) -> dict:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in cfg.items()}


@pytest.mark.parametrize("kwargs", [
    {},
    {"load_in_8bit": True, "llm_int8_threshold": 4.0, "llm_int8_skip_modules": ["out_proj"]},
    {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
     "bnb_4bit_compute_dtype": torch.bfloat16},
    {"load_in_4bit": True, "bnb_4bit_compute_dtype": "float16", "bnb_4bit_quant_storage": torch.bfloat16},
])
def test_dict_matches_transformers(kwargs):
    transformers = pytest.importorskip("transformers")
    ours = BitsAndBytesConfig(**kwargs)
    theirs = transformers.BitsAndBytesConfig(**kwargs)
    assert ours.to_dict() == _hf_dict(theirs.to_dict())
    assert ours.to_diff_dict() == _hf_dict(theirs.to_diff_dict())
    assert ours.quantization_method() == theirs.quantization_method()
    assert BitsAndBytesConfig.from_dict(ours.to_dict()) == ours
    assert BitsAndBytesConfig.from_dict(_hf_dict(theirs.to_dict())) == ours


def test_defaults():
    cfg = BitsAndBytesConfig()
    assert (cfg.load_in_8bit, cfg.load_in_4bit, cfg.llm_int8_threshold, cfg.llm_int8_skip_modules) == (False, False, 6.0, None)
    assert cfg.bnb_4bit_quant_type == "fp4" and cfg.bnb_4bit_use_double_quant is False
    assert cfg.bnb_4bit_compute_dtype == torch.float32 and cfg.bnb_4bit_quant_storage == torch.uint8
    assert not cfg.is_quantizable() and cfg.quantization_method() is None


def test_json_and_update(tmp_path):
    cfg = BitsAndBytesConfig(load_in_4bit=True)
    unused = cfg.update(bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="bfloat16", not_a_field=1)
    assert unused == {"not_a_field": 1} and cfg.bnb_4bit_compute_dtype == torch.bfloat16
    cfg.to_json_file(tmp_path / "q.json", use_diff=False)
    import json

    assert BitsAndBytesConfig.from_dict(json.loads((tmp_path / "q.json").read_text())) == cfg


def test_bad_input():
    with pytest.raises(ValueError, match="both True"):
        BitsAndBytesConfig(load_in_8bit=True, load_in_4bit=True)
    cfg = BitsAndBytesConfig(load_in_8bit=True)
    with pytest.raises(ValueError, match="both True"):
        cfg.load_in_4bit = True
    with pytest.raises(ValueError, match="bnb_4bit_quant_type='int3'"):
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="int3")
    with pytest.raises(ValueError, match="cannot be computed"):
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.int8)
    with pytest.raises(ValueError, match="cannot"):
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="not a dtype"):
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype="float7")
    with pytest.raises(ValueError, match="quant_storage"):
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_storage=torch.complex64)
    with pytest.raises(ValueError, match="quant_method"):
        BitsAndBytesConfig.from_dict({"quant_method": "gptq"})


def test_requantizing_4bit_gguf_weights_warns(caplog):
    """A GGUF file whose projections are already 4-bit: NF4 would round them twice, so say so."""
    import logging
    from types import SimpleNamespace

    def gguf(kind: str) -> SimpleNamespace:
        tensors = {"blk.0.ffn_down.weight": SimpleNamespace(type_name=kind), "token_embd.weight": SimpleNamespace(type_name="Q6_K")}
        return SimpleNamespace(path="model.gguf", tensors=tensors)

    plan = [("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", "ffn_down"),
            ("token_embd.weight", "model.embed_tokens.weight", "token_embd")]
    with caplog.at_level(logging.WARNING, logger="openformers"):
        assert BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4").plan_gguf(gguf("Q4_1"), "llama", {}, plan) == {}
    assert "Q4_1 weights, already 4-bit" in caplog.text and "GGUFQuantizationConfig" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="openformers"):
        BitsAndBytesConfig(load_in_4bit=True).plan_gguf(gguf("F16"), "llama", {}, plan)
        BitsAndBytesConfig(load_in_8bit=True).plan_gguf(gguf("Q4_1"), "llama", {}, plan)
    assert caplog.text == ""
