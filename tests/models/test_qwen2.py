"""Qwen2: the Llama checks plus q/k/v biases and per-layer sliding windows against transformers."""
from __future__ import annotations

import pytest
import torch

import openformers
from tests.models import llama_family as fam
from tests.runtime import native_checks as native
from tests.runtime.native_checks import two_threads  # noqa: F401 (a fixture)

pytest.importorskip("transformers")

# layer 0 full attention, layer 1 a window of 4
SLIDING = {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}


@pytest.mark.parametrize("head", fam.HEADS)
def test_head_parity(head, tmp_path):
    fam.check_head_parity("Qwen2", head, tmp_path)


def test_biases():
    model = openformers.Qwen2Model(openformers.Qwen2Config(**fam.tiny_config()))
    attn = model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
    assert attn.o_proj.bias is None and model.layers[0].mlp.gate_proj.bias is None


def test_sliding_layers_parity(tmp_path):
    fam.check_head_parity("Qwen2", "ForCausalLM", tmp_path / "eager", **SLIDING)
    fam.check_unpadded_sdpa_parity("Qwen2", tmp_path / "sdpa", seq=11, **SLIDING)


def test_sliding_window_off_by_default():
    cfg = openformers.Qwen2Config(**fam.tiny_config(sliding_window=4))
    assert cfg.sliding_window is None and cfg.layer_types == ["full_attention"] * 2
    cfg = openformers.Qwen2Config(**fam.tiny_config(**SLIDING))
    assert cfg.layer_types == ["full_attention", "sliding_attention"]


def test_padding():
    fam.check_padding("Qwen2", **SLIDING)


def test_cached_decoding():
    fam.check_cached_decoding("Qwen2", **SLIDING)


def test_eager_vs_sdpa():
    fam.check_eager_vs_sdpa("Qwen2", **SLIDING)


def test_save_here_load_in_transformers(tmp_path):
    fam.check_save_here_load_there("Qwen2", tmp_path, **SLIDING)


def test_gradient_checkpointing():
    fam.check_gradient_checkpointing("Qwen2")


def test_tied_embeddings(tmp_path):
    fam.check_tied_embeddings("Qwen2", tmp_path)


def test_config_defaults(tmp_path):
    import transformers

    ours, theirs = openformers.Qwen2Config(), transformers.Qwen2Config()
    for key in ("vocab_size", "intermediate_size", "num_key_value_heads", "max_position_embeddings", "sliding_window",
                "max_window_layers", "use_sliding_window", "layer_types", "rope_parameters", "bos_token_id",
                "eos_token_id", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(theirs, key), key
    cfg = openformers.Qwen2Config(**fam.tiny_config(**SLIDING))
    cfg.save_pretrained(tmp_path)
    assert transformers.AutoConfig.from_pretrained(tmp_path).layer_types == cfg.layer_types


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (None, 1e-3)],
                         ids=["float32", "bfloat16", "q4"])
def test_native_decode_step_with_qkv_biases(dtype, atol, two_threads, monkeypatch, caplog):
    """Qwen2's q/k/v biases no longer keep it off the one-call native decode step: the step is built and used,
    and its logits equal the plan's PyTorch step's and the module path's, its greedy tokens the module path's."""
    import openformers
    from openformers.quantization import GGUFQuantizationConfig

    native.skip_without_kernel()
    size = dict(hidden_size=128, intermediate_size=256) if dtype is None else {}
    torch.manual_seed(0)
    model = openformers.Qwen2ForCausalLM(openformers.Qwen2Config(**fam.tiny_config(**size)))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    if dtype is None:
        GGUFQuantizationConfig().quantize_model(model)
    model = model.to(dtype or torch.float32).eval()
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    ids = torch.randint(3, fam.VOCAB, (1, 12), generator=torch.Generator().manual_seed(4))
    native.assert_native_step_agrees(model, ids, atol, monkeypatch, caplog)
