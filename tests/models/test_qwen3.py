"""Qwen3: the Llama family's checks plus per-head q/k norms, a free head_dim and sliding windows,
against transformers."""
from __future__ import annotations

import pytest
import torch

import openformers
from tests.models import llama_family as fam

pytest.importorskip("transformers")

# head_dim 24 != hidden_size / heads (16); layer 0 full attention, layer 1 a window of 4
QWEN3 = {"head_dim": 24}
SLIDING = {"head_dim": 24, "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}


@pytest.mark.parametrize("head", fam.HEADS)
def test_head_parity(head, tmp_path):
    fam.check_head_parity("Qwen3", head, tmp_path, **QWEN3)


def test_layout():
    model = openformers.Qwen3Model(openformers.Qwen3Config(**fam.tiny_config(**QWEN3)))
    attn = model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (4 * 24, 64) and attn.k_proj.weight.shape == (2 * 24, 64)
    assert attn.q_norm.weight.shape == (24,) and attn.k_norm.weight.shape == (24,)
    assert all(p.bias is None for p in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))


def test_attention_bias_parity(tmp_path):
    fam.check_head_parity("Qwen3", "ForCausalLM", tmp_path, attention_bias=True, **QWEN3)


def test_sliding_layers_parity(tmp_path):
    fam.check_head_parity("Qwen3", "ForCausalLM", tmp_path / "eager", **SLIDING)
    fam.check_unpadded_sdpa_parity("Qwen3", tmp_path / "sdpa", seq=11, **SLIDING)


def test_generate_greedy_and_beam(tmp_path):
    fam.check_generate_parity("Qwen3", tmp_path, **QWEN3)


def test_padding():
    fam.check_padding("Qwen3", **SLIDING)


def test_cached_decoding():
    fam.check_cached_decoding("Qwen3", **SLIDING)


def test_eager_vs_sdpa():
    fam.check_eager_vs_sdpa("Qwen3", **SLIDING)


def test_save_here_load_in_transformers(tmp_path):
    fam.check_save_here_load_there("Qwen3", tmp_path, **SLIDING)


def test_gradient_checkpointing():
    fam.check_gradient_checkpointing("Qwen3", **QWEN3)


def test_tied_embeddings(tmp_path):
    fam.check_tied_embeddings("Qwen3", tmp_path, **QWEN3)


def test_packed_training_matches_padded():
    """Training with -100 at padding runs on the real tokens only; loss and gradients equal the padded run."""
    torch.manual_seed(0)
    model = openformers.Qwen3ForCausalLM(openformers.Qwen3Config(**fam.tiny_config(**QWEN3))).train()
    ids, mask = fam.random_batch(fam.VOCAB, batch=3, seq=10, pad_last=6, seed=2)
    labels = ids.masked_fill(mask == 0, -100)
    grads = []
    for packed in (True, False):
        model.zero_grad()
        # output_hidden_states turns packing off: the padded reference run
        out = model(ids, attention_mask=mask, labels=labels, output_hidden_states=not packed)
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    fam.assert_close(grads[0][0], grads[1][0], what="loss")
    for name in grads[0][1]:
        fam.assert_close(grads[0][1][name], grads[1][1][name], atol=1e-6, what=f"grad {name}")


def test_config_defaults(tmp_path):
    import transformers

    ours, theirs = openformers.Qwen3Config(), transformers.Qwen3Config()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_key_value_heads", "head_dim",
                "max_position_embeddings", "sliding_window", "max_window_layers", "use_sliding_window", "layer_types",
                "rope_parameters", "attention_bias", "bos_token_id", "eos_token_id", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(theirs, key), key
    cfg = openformers.Qwen3Config(**fam.tiny_config(**SLIDING))
    cfg.save_pretrained(tmp_path)
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert loaded.layer_types == cfg.layer_types and loaded.head_dim == 24
    assert "mlp_bias" not in (tmp_path / "config.json").read_text()


def _reference_with_random_norms(path):
    """A tiny transformers Qwen3 whose norm weights (q_norm and k_norm included) are not ones, saved to ``path``."""
    ref = fam.build_reference("Qwen3ForCausalLM", "Qwen3Config", path, **fam.tiny_config(**QWEN3))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    ref.save_pretrained(path)
    return ref


def test_norm_weights_from_safetensors(tmp_path):
    ref = _reference_with_random_norms(tmp_path)
    ours = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(3, fam.VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fam.assert_close(ours(ids).logits, ref(ids).logits, what="Qwen3 from safetensors")


def test_loads_from_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    from openformers.quantization import GGUFQuantizationConfig
    from tests.models.test_gguf import write_tiny_llama

    ref = _reference_with_random_norms(tmp_path / "ref")
    sd = ref.state_dict()

    def extend(w):  # what llama.cpp's converter adds for Qwen3: the head size and the per-head norms
        w.add_key_length(24)
        w.add_value_length(24)
        for i in range(2):
            for short, hf in (("attn_q_norm", "q_norm"), ("attn_k_norm", "k_norm")):
                w.add_tensor(f"blk.{i}.{short}.weight", sd[f"model.layers.{i}.self_attn.{hf}.weight"].numpy())

    path = write_tiny_llama(tmp_path / "qwen3.gguf", ref, arch="qwen3", extend=extend)
    ours = openformers.AutoModelForCausalLM.from_pretrained(str(path))
    assert type(ours).__name__ == "Qwen3ForCausalLM" and ours.config.head_dim == 24
    ids = torch.randint(3, fam.VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fam.assert_close(ours(ids).logits, ref(ids).logits, what="Qwen3 from GGUF")
    # a file without the norms is refused, naming them
    bare = write_tiny_llama(tmp_path / "bare.gguf", ref, arch="qwen3")
    with pytest.raises(Exception, match="attn_q_norm"):
        openformers.AutoModelForCausalLM.from_pretrained(str(bare))
    # keep-quantized: 4-bit projections, float norms
    quant = openformers.AutoModelForCausalLM.from_pretrained(
        str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32))
    with torch.no_grad():
        assert (quant(ids).logits - ref(ids).logits).abs().max() < 0.5
