"""Llama: parity with transformers, padding, cached decoding, backends, save/load, rope scaling."""
from __future__ import annotations

import pytest
import torch

import openformers
from tests.models import llama_family as fam
from tests.models.parity import assert_close, build_reference

pytest.importorskip("transformers")


@pytest.mark.parametrize("head", fam.HEADS)
def test_head_parity(head, tmp_path):
    fam.check_head_parity("Llama", head, tmp_path)


def test_parity_head_dim_and_biases(tmp_path):
    # explicit head_dim != hidden/heads, attention and mlp biases
    fam.check_head_parity("Llama", "ForCausalLM", tmp_path, head_dim=24, attention_bias=True, mlp_bias=True)


def test_sdpa_parity(tmp_path):
    fam.check_unpadded_sdpa_parity("Llama", tmp_path)


def test_padding():
    fam.check_padding("Llama")


def test_cached_decoding():
    fam.check_cached_decoding("Llama")


def test_eager_vs_sdpa():
    fam.check_eager_vs_sdpa("Llama")


def test_save_here_load_in_transformers(tmp_path):
    fam.check_save_here_load_there("Llama", tmp_path)


def test_gradient_checkpointing():
    fam.check_gradient_checkpointing("Llama")


def test_tied_embeddings(tmp_path):
    fam.check_tied_embeddings("Llama", tmp_path)


ROPE_VARIANTS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
}


@pytest.mark.parametrize("variant", sorted(ROPE_VARIANTS))
def test_rope_scaling_parity(variant, tmp_path):
    # max_position_embeddings 8 < sequence 12, so dynamic NTK recomputes its frequencies
    scaling = dict(ROPE_VARIANTS[variant], rope_theta=500.0)
    kw = fam.tiny_config(max_position_embeddings=8, rope_scaling=scaling)
    ref = build_reference("LlamaForCausalLM", "LlamaConfig", tmp_path, **kw)
    ours = openformers.LlamaForCausalLM.from_pretrained(tmp_path)
    assert ours.config.rope_parameters["rope_type"] == variant
    for seq in (12, 5):  # long, then short again (dynamic resets)
        ids = torch.randint(3, fam.VOCAB, (2, seq), generator=torch.Generator().manual_seed(seq))
        with torch.no_grad():
            assert_close(ours(ids).logits, ref(ids).logits, what=f"{variant} rope, seq {seq}")


def test_legacy_rope_fields_and_inv_freq_key(tmp_path):
    """A transformers 4 style config.json (rope_theta + rope_scaling with "type") and a checkpoint
    that stored rotary_emb.inv_freq both load."""
    import json

    from safetensors.torch import load_file, save_file

    ref = build_reference("LlamaForCausalLM", "LlamaConfig", tmp_path, **fam.tiny_config())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("rope_parameters")
    cfg.update(rope_theta=10000.0, rope_scaling=None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    sd = load_file(str(tmp_path / "model.safetensors"))
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.zeros(8)
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours, info = openformers.LlamaForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert ours.config.rope_theta == 10000.0 and ours.config.rope_parameters["rope_type"] == "default"
    ids = torch.randint(3, fam.VOCAB, (1, 6))
    with torch.no_grad():
        assert_close(ours(ids).logits, ref(ids).logits, what="legacy config")


def test_config_defaults_and_round_trip(tmp_path):
    import transformers

    ours, theirs = openformers.LlamaConfig(), transformers.LlamaConfig()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "bos_token_id",
                "eos_token_id", "tie_word_embeddings", "attention_bias", "mlp_bias", "head_dim", "rope_parameters"):
        assert getattr(ours, key) == getattr(theirs, key), key
    cfg = openformers.LlamaConfig(num_attention_heads=8, num_key_value_heads=2, rope_theta=5e5,
                                  rope_scaling={"type": "linear", "factor": 4.0})
    assert cfg.rope_parameters["rope_theta"] == 5e5 and cfg.rope_scaling["factor"] == 4.0
    cfg.save_pretrained(tmp_path)
    again = openformers.AutoConfig.from_pretrained(tmp_path)
    assert again.rope_parameters == cfg.rope_parameters and again.num_key_value_heads == 2
    assert transformers.AutoConfig.from_pretrained(tmp_path).rope_parameters["factor"] == 4.0
    with pytest.raises(ValueError, match="num_key_value_heads"):
        openformers.LlamaConfig(num_attention_heads=4, num_key_value_heads=3)


def test_causal_lm_options(tmp_path):
    ref = build_reference("LlamaForCausalLM", "LlamaConfig", tmp_path, **fam.tiny_config())
    ours = openformers.LlamaForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(3, fam.VOCAB, (2, 7), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        full = ours(ids).logits
        assert_close(ours(ids, logits_to_keep=2).logits, full[:, -2:], what="logits_to_keep")
        assert_close(ours(ids, logits_to_keep=torch.tensor([0, 3])).logits, full[:, [0, 3]], what="logits_to_keep idx")
        loss = ours(ids, labels=ids, num_items_in_batch=20).loss
        assert_close(loss, ref(ids, labels=ids, num_items_in_batch=20).loss, what="num_items_in_batch loss")
        tup = ours(ids, labels=ids, return_dict=False, use_cache=False)
        assert len(tup) == 2 and torch.equal(tup[1], full)
        embeds = ours.get_input_embeddings()(ids)
        assert_close(ours(inputs_embeds=embeds).logits, full, what="inputs_embeds")
    with pytest.raises(ValueError, match="exactly one"):
        ours(ids, inputs_embeds=embeds)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ours(ids, not_an_argument=1)


def test_sequence_classification_left_padding_and_no_pad_token():
    torch.manual_seed(0)
    model = openformers.LlamaForSequenceClassification(openformers.LlamaConfig(**fam.tiny_config())).eval()
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = (ids != 0).long()
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        alone = model(torch.tensor([[9, 10]])).logits
    assert_close(batched[1], alone[0], what="left-padded pooling")
    model.config.pad_token_id = None
    with pytest.raises(ValueError, match="pad_token_id"):
        model(ids)


def test_bfloat16_matches_reference_exactly(tmp_path):
    import transformers

    build_reference("LlamaForCausalLM", "LlamaConfig", tmp_path, **fam.tiny_config(rope_theta=500000.0))
    ref = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = openformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert ours.model.rotary_emb.inv_freq.dtype == torch.float32
    ids = torch.randint(3, fam.VOCAB, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours_logits, ref_logits = ours(ids).logits, ref(ids).logits
    assert ours_logits.dtype == torch.bfloat16
    assert_close(ours_logits, ref_logits, atol=0.0, what="bfloat16 logits")


def test_cache_forms_and_qa_from_causal_checkpoint(tmp_path):
    from openformers.modules.cache import DynamicCache

    torch.manual_seed(0)
    model = openformers.LlamaForCausalLM(openformers.LlamaConfig(**fam.tiny_config())).eval()
    ids = torch.randint(3, fam.VOCAB, (1, 6))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :4])
        assert isinstance(out.past_key_values, DynamicCache)
        legacy = out.past_key_values.to_legacy_cache()
        step = model(ids[:, 4:], past_key_values=legacy).logits
    assert_close(step, full[:, 4:], what="legacy tuple cache")
    model.save_pretrained(tmp_path)
    qa, info = openformers.LlamaForQuestionAnswering.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["qa_outputs.bias", "qa_outputs.weight"]
    assert torch.equal(qa.transformer.embed_tokens.weight, model.model.embed_tokens.weight)
