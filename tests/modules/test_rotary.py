"""Rotary embeddings: frequencies of every scaling type against transformers, config forms,
partial rotary, dtype handling and the norm / MLP building blocks."""
from __future__ import annotations

import pytest
import torch

from openformers.modules.mlp import GatedMLP, get_activation
from openformers.modules.norms import RMSNorm
from openformers.modules.rotary import (
    ROPE_INIT_FUNCTIONS,
    RotaryEmbedding,
    apply_rotary,
    rope_parameters_of,
    standardize_rope_parameters,
)
from tests.models.parity import assert_close

transformers = pytest.importorskip("transformers")

SCALINGS = {
    "default": {},
    "linear": {"rope_type": "linear", "factor": 3.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 16},
}


def _configs(scaling: dict, **kw):
    common = dict(hidden_size=128, num_attention_heads=4, max_position_embeddings=32, **kw)
    params = dict(scaling, rope_theta=1000.0) if scaling else {"rope_type": "default", "rope_theta": 1000.0}
    theirs = transformers.LlamaConfig(rope_parameters=dict(params), **common)
    from openformers import LlamaConfig

    return LlamaConfig(rope_parameters=dict(params), **common), theirs


@pytest.mark.parametrize("kind", sorted(SCALINGS))
def test_cos_sin_match_reference(kind):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    ours_cfg, theirs_cfg = _configs(SCALINGS[kind])
    ours, theirs = RotaryEmbedding(ours_cfg), LlamaRotaryEmbedding(theirs_cfg)
    x = torch.zeros(1, dtype=torch.float32)
    for seq in (40, 8):  # past max_position_embeddings (dynamic grows), then short (it resets)
        pos = torch.arange(seq)[None].expand(2, seq)
        (c1, s1), (c2, s2) = ours(x, pos), theirs(x, pos)
        assert_close(c1, c2, atol=1e-6, what=f"{kind} cos")
        assert_close(s1, s2, atol=1e-6, what=f"{kind} sin")
        assert_close(ours.inv_freq, theirs.inv_freq, atol=1e-7, what=f"{kind} inv_freq")


def test_registry_and_unknown_type():
    assert set(ROPE_INIT_FUNCTIONS) >= {"default", "linear", "dynamic", "llama3", "yarn"}
    cfg, _ = _configs({})
    cfg.rope_parameters = {"rope_type": "nope", "rope_theta": 1.0}
    with pytest.raises(ValueError, match="rope_type='nope'"):
        RotaryEmbedding(cfg)
    cfg.rope_parameters = {"rope_type": "linear", "rope_theta": 1.0}
    with pytest.raises(ValueError, match="'factor'"):
        RotaryEmbedding(cfg)


def test_standardize_old_and_new_forms():
    old = standardize_rope_parameters(None, rope_scaling={"type": "linear", "factor": 2.0}, rope_theta=500.0)
    assert old["rope_type"] == "linear" and old["rope_theta"] == 500.0
    new = standardize_rope_parameters({"rope_type": "llama3", "factor": 8.0, "rope_theta": 5.0}, max_position_embeddings=64)
    assert new["original_max_position_embeddings"] == 64 and new["rope_theta"] == 5.0
    assert standardize_rope_parameters(None) == {"rope_theta": 10000.0, "rope_type": "default"}

    class OldStyle:  # a config that only has the pre-transformers-5 fields
        rope_theta = 123.0
        rope_scaling = {"type": "dynamic", "factor": 2.0}
        max_position_embeddings = 16

    params = rope_parameters_of(OldStyle())
    assert params["rope_type"] == "dynamic" and params["rope_theta"] == 123.0


def test_partial_rotary_and_apply():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    cfg, _ = _configs({}, partial_rotary_factor=0.5)
    rope = RotaryEmbedding(cfg)
    assert rope.dim == 16  # head_dim 32 * 0.5
    q, k = torch.randn(2, 4, 5, 32), torch.randn(2, 2, 5, 32)
    cos, sin = rope(q, torch.arange(5)[None])
    q2, k2 = apply_rotary(q, k, cos, sin)
    ref_q, ref_k = apply_rotary_pos_emb(q[..., :16], k[..., :16], cos, sin)
    assert_close(q2[..., :16], ref_q, what="rotated q")
    assert_close(k2[..., :16], ref_k, what="rotated k")
    assert torch.equal(q2[..., 16:], q[..., 16:]) and torch.equal(k2[..., 16:], k[..., 16:])


def test_meta_build_and_float32_frequencies():
    cfg, _ = _configs(SCALINGS["llama3"])
    with torch.device("meta"):
        rope = RotaryEmbedding(cfg)
    assert rope.inv_freq.device.type == "cpu"
    assert "inv_freq" not in rope.state_dict()
    rope = rope.to(torch.bfloat16)
    assert rope.inv_freq.dtype == torch.float32
    cos, _ = rope(torch.zeros(1, dtype=torch.bfloat16), torch.arange(4)[None])
    assert cos.dtype == torch.bfloat16


def test_rms_norm_and_gated_mlp_match_reference():
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, dtype=torch.bfloat16)
    ours, theirs = RMSNorm(16, eps=1e-5), LlamaRMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    assert torch.equal(ours(x), theirs(x))  # float32 weight: promoted, as in the reference
    ours, theirs = ours.to(torch.bfloat16), theirs.to(torch.bfloat16)
    assert torch.equal(ours(x), theirs(x)) and ours(x).dtype == torch.bfloat16
    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=24, num_attention_heads=2, mlp_bias=True)
    mlp, ref = GatedMLP(cfg), LlamaMLP(cfg)
    ref.load_state_dict(mlp.state_dict())
    x = torch.randn(2, 3, 16)
    assert_close(mlp(x), ref(x), what="GatedMLP")
    with pytest.raises(ValueError, match="hidden_act='nope'"):
        get_activation("nope")
