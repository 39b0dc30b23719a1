"""GGUF files that carry llama3 rope scaling as ``rope_freqs.weight`` (per-pair frequency divisors)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from openformers.core.gguf import GGUFError
from openformers.models.gguf_loading import read_gguf_config
from tests.models.test_gguf import write_tiny_llama

# dim 16, theta 1e4 and an original context of 32 put the 8 frequencies in all three llama3 bands
LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def llama_cpp_rope_factors(theta: float, dim: int, factor: float, low: float, high: float, old_ctx: int) -> np.ndarray:
    """The divisors llama.cpp's converter writes for llama3 scaling, one per inverse frequency."""
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * theta ** (i / dim)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


FACTORS = llama_cpp_rope_factors(10000.0, 16, 8.0, 1.0, 4.0, 32)


@pytest.fixture(scope="module")
def llama3_reference():
    """A tiny transformers Llama with llama3 rope scaling (the weights the file is written from)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters=dict(LLAMA3),
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _write(path, model, factors=FACTORS, scaling_type: str | None = None):
    def extend(w):
        if scaling_type is not None:
            w.add_string("llama.rope.scaling.type", scaling_type)
        if factors is not None:
            w.add_tensor("rope_freqs.weight", np.asarray(factors, dtype=np.float32))

    return write_tiny_llama(path, model, extend=extend)


def test_factors_are_the_llama3_scaling(tmp_path, llama3_reference):
    from openformers.models.auto import AutoModelForCausalLM
    from openformers.models.llama import LlamaConfig
    from openformers.modules.rotary import RotaryEmbedding

    path = _write(tmp_path / "l31.gguf", llama3_reference)
    cfg = read_gguf_config(path)
    assert cfg["rope_scaling"]["rope_type"] == "default" and len(cfg["rope_scaling"]["freq_factors"]) == 8
    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    # the divisors from the file give our llama3 frequencies computed from the config
    expected = RotaryEmbedding(LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=256,
                                           rope_parameters=dict(LLAMA3))).inv_freq
    base = 1.0 / 10000.0 ** (torch.arange(0, 16, 2) / 16)
    assert (expected / base).unique().numel() > 2  # the three llama3 bands are all there
    torch.testing.assert_close(ours.model.rotary_emb.inv_freq, expected, rtol=1e-6, atol=0)
    # and the model matches transformers' llama3 model past the original context
    ids = torch.randint(3, 128, (2, 80), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, llama3_reference(ids).logits, rtol=0, atol=1e-5)
    # ignoring the factors would be a different model
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, rope_scaling={"rope_type": "default"})
    with torch.no_grad():
        assert (plain(ids).logits - llama3_reference(ids).logits).abs().max() > 1e-3


def test_factors_survive_save_and_reload(tmp_path, llama3_reference):
    from openformers.models.auto import AutoModelForCausalLM

    path = _write(tmp_path / "l31.gguf", llama3_reference, scaling_type="llama3")
    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    # a llama3 type in the metadata is not applied twice: the factors already are that scaling
    assert ours.config.rope_parameters["rope_type"] == "default"
    ours.save_pretrained(tmp_path / "saved")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert torch.equal(again.model.rotary_emb.inv_freq, ours.model.rotary_emb.inv_freq)


def test_factors_compose_with_linear_scaling(tmp_path, llama3_reference):
    def extend(w):
        w.add_string("llama.rope.scaling.type", "linear")
        w.add_float32("llama.rope.scaling.factor", 2.0)
        w.add_tensor("rope_freqs.weight", FACTORS)

    path = write_tiny_llama(tmp_path / "lin.gguf", llama3_reference, extend=extend)
    scaling = read_gguf_config(path)["rope_scaling"]
    assert scaling["rope_type"] == "linear" and scaling["factor"] == 2.0 and len(scaling["freq_factors"]) == 8


@pytest.mark.parametrize("factors, match", [(np.ones(5), "has 5 values"), (np.zeros(8), "positive finite")])
def test_bad_factors_name_the_tensor(tmp_path, llama3_reference, factors, match):
    path = _write(tmp_path / "bad.gguf", llama3_reference, factors=factors)
    with pytest.raises(GGUFError, match=f"rope_freqs.weight.*{match}"):
        read_gguf_config(path)


def test_rotary_rejects_factors_of_the_wrong_length():
    from openformers.models.llama import LlamaConfig
    from openformers.modules.rotary import RotaryEmbedding

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_parameters={"rope_type": "default", "freq_factors": [1.0] * 3})
    with pytest.raises(ValueError, match="freq_factors.*8 positive numbers"):
        RotaryEmbedding(config)
