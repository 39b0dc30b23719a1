"""Gemma: Llama's layer with offset RMSNorms (``1 + weight`` in float32), embeddings scaled by sqrt(hidden_size)
and a tanh-GELU gated MLP, against transformers; and the runtime's fast path (the plan and the one-call native
decode step) for it, in float32, bfloat16 and kept 4-bit."""
from __future__ import annotations


import pytest
import torch

import openformers
from openformers.modules.norms import OffsetRMSNorm
from openformers.runtime import decode
from tests.models import llama_family as fam
from tests.runtime import native_checks as native
from tests.runtime.native_checks import two_threads  # noqa: F401 (a fixture)

pytest.importorskip("transformers")

# head_dim 24 != hidden_size / heads (16)
GEMMA = {"head_dim": 24}
HEADS = ("Model", "ForCausalLM", "ForSequenceClassification", "ForTokenClassification")


def _randomize_norms(model: torch.nn.Module, seed: int = 5) -> None:
    """Norm weights away from their zero init, so a missed or doubled ``1 +`` shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)


def _reference(path, **overrides):
    """A tiny transformers Gemma with random norm weights, saved to ``path``."""
    ref = fam.build_reference("GemmaForCausalLM", "GemmaConfig", path, **fam.tiny_config(**{**GEMMA, **overrides}))
    _randomize_norms(ref)
    ref.save_pretrained(path)
    return ref


IDS = torch.randint(3, fam.VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("head", HEADS)
def test_head_parity(head, tmp_path):
    fam.check_head_parity("Gemma", head, tmp_path, **GEMMA)


def test_logits_and_loss_with_random_norms(tmp_path):
    ref = _reference(tmp_path)
    ours = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(ours).__name__ == "GemmaForCausalLM"
    assert isinstance(ours.model.norm, OffsetRMSNorm)
    assert isinstance(ours.model.layers[0].input_layernorm, OffsetRMSNorm)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight  # tied by default
    labels = IDS.clone()
    labels[:, :2] = -100
    with torch.no_grad():
        mine, theirs = ours(IDS, labels=labels), ref(IDS, labels=labels)
    fam.assert_close(mine.logits, theirs.logits, what="Gemma float32 logits")
    fam.assert_close(mine.loss, theirs.loss, atol=1e-6, what="Gemma loss")
    with torch.enable_grad():  # the module path (no runner) too
        fam.assert_close(ours(IDS).logits, theirs.logits, what="Gemma float32 logits, module path")
    # bfloat16: the same operators round at the same points; the values agree to a few bfloat16 steps of the
    # logits' size (Llama's tiny models show the same)
    ours16, ref16 = ours.to(torch.bfloat16), ref.to(torch.bfloat16)
    with torch.no_grad():
        a, b = ours16(IDS).logits.float(), ref16(IDS).logits.float()
    assert (a - b).abs().max() <= 4 * 2**-8 * b.abs().max(), (a - b).abs().max()
    assert (a - b).abs().mean() <= 2**-9 * b.abs().max()


def test_inputs_embeds_are_not_scaled_and_the_scale_rounds_as_transformers(tmp_path):
    # hidden 48: sqrt(48) is not a bfloat16 value, so the scalar's rounding to the embeddings' dtype matters
    ref = _reference(tmp_path, hidden_size=48, num_attention_heads=4, head_dim=12)
    ours = openformers.GemmaForCausalLM.from_pretrained(tmp_path)
    for dtype in (torch.float32, torch.bfloat16):
        ours, ref = ours.to(dtype), ref.to(dtype)
        with torch.no_grad():
            hidden = ours.model.layer_inputs(IDS, None, None, None, None, False)[0]
            assert torch.equal(hidden, ref.model.embed_tokens(IDS)), dtype
    ours, ref = ours.float(), ref.float()
    embeds = torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fam.assert_close(ours(inputs_embeds=embeds).logits, ref(inputs_embeds=embeds).logits, what="inputs_embeds")


def test_offset_norm_rounds_as_transformers():
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    ours, theirs = OffsetRMSNorm(32, eps=1e-6), GemmaRMSNorm(32, eps=1e-6)
    assert torch.equal(ours.weight, torch.zeros(32))  # init: zeros (the offset makes it one)
    with torch.no_grad():
        ours.weight.uniform_(-1, 1)
        theirs.weight.copy_(ours.weight)
    x = torch.randn(3, 7, 32) * 4
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        a, b = ours.to(dtype)(x.to(dtype)), theirs.to(dtype)(x.to(dtype))
        assert a.dtype == dtype and torch.equal(a, b), dtype


def test_generate_greedy_and_beam(tmp_path):
    ref = _reference(tmp_path)
    ours = openformers.GemmaForCausalLM.from_pretrained(tmp_path).eval()
    ids, mask = fam.random_batch(fam.VOCAB, batch=2, seq=6, pad_last=2, left=True, seed=9)
    ids[mask == 0] = 0
    for kw in ({"do_sample": False}, {"do_sample": False, "num_beams": 3}):
        args = dict(attention_mask=mask, max_new_tokens=8, pad_token_id=0, eos_token_id=None, **kw)
        with torch.no_grad():
            theirs, mine = ref.generate(ids, **args), ours.generate(ids, **args)
        assert torch.equal(mine, theirs), f"generate {kw}: {mine.tolist()} != {theirs.tolist()}"


def test_padding():
    fam.check_padding("Gemma", **GEMMA)


def test_cached_decoding():
    fam.check_cached_decoding("Gemma", **GEMMA)


def test_eager_vs_sdpa():
    fam.check_eager_vs_sdpa("Gemma", **GEMMA)


def test_gradient_checkpointing():
    fam.check_gradient_checkpointing("Gemma", **GEMMA)


def test_tied_embeddings(tmp_path):
    fam.check_tied_embeddings("Gemma", tmp_path, **GEMMA)


def test_save_here_load_in_transformers(tmp_path):
    import transformers

    torch.manual_seed(0)
    model = openformers.GemmaForCausalLM(openformers.GemmaConfig(**fam.tiny_config(**GEMMA))).eval()
    _randomize_norms(model)
    model.save_pretrained(tmp_path)
    theirs = transformers.GemmaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        fam.assert_close(model(IDS).logits, theirs(IDS).logits, what="Gemma saved here")


def test_config_defaults(tmp_path):
    import transformers

    ours, theirs = openformers.GemmaConfig(), transformers.GemmaConfig()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
                "rope_parameters", "attention_bias", "pad_token_id", "bos_token_id", "eos_token_id",
                "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert openformers.GemmaConfig(hidden_act="gelu").hidden_act == "gelu_pytorch_tanh"  # the released configs' value
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        openformers.GemmaConfig(use_bidirectional_attention=True)
    cfg = openformers.GemmaConfig(**fam.tiny_config(**GEMMA))
    cfg.save_pretrained(tmp_path)
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "GemmaConfig" and loaded.head_dim == 24
    assert "mlp_bias" not in (tmp_path / "config.json").read_text()
    assert type(openformers.AutoConfig.from_pretrained(tmp_path)).__name__ == "GemmaConfig"


# -- the runtime's fast path --------------------------------------------------------------------------------------


def _model(dtype: torch.dtype | None, **overrides) -> openformers.GemmaForCausalLM:
    """A tiny Gemma with random norms; ``dtype`` None: kept 4-bit (128 wide for the native kernel), float32."""
    from openformers.quantization import GGUFQuantizationConfig

    size = dict(hidden_size=128, intermediate_size=256, head_dim=32) if dtype is None else dict(head_dim=16)
    torch.manual_seed(0)
    model = openformers.GemmaForCausalLM(openformers.GemmaConfig(**fam.tiny_config(**{**size, **overrides})))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    _randomize_norms(model)
    if dtype is None:
        GGUFQuantizationConfig().quantize_model(model)
    return model.to(dtype or torch.float32).eval()


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (None, 1e-3)],
                         ids=["float32", "bfloat16", "q4"])
def test_fast_path_plan_and_native_step(dtype, atol, two_threads, monkeypatch, caplog):
    native.skip_without_kernel()
    model = _model(dtype)
    decode._LOGGED.clear()
    ids = torch.randint(3, fam.VOCAB, (1, 12), generator=torch.Generator().manual_seed(4))
    native.assert_native_step_agrees(model, ids, atol, monkeypatch, caplog)


def test_optimizer_step_on_a_norm_weight_is_seen_by_the_next_decode_step(two_threads, monkeypatch):
    """The native step multiplies by float32 copies of ``1 + weight``; an update of the weight in place (an
    optimizer step) makes them again before the next step."""
    native.skip_without_kernel()
    model = _model(torch.float32)
    ids = torch.randint(3, fam.VOCAB, (1, 8), generator=torch.Generator().manual_seed(6))
    native.assert_update_is_seen(model, ids, [model.model.layers[1].post_attention_layernorm.weight,
                                              model.model.layers[0].input_layernorm.weight], monkeypatch)


def test_native_rows_step_for_sequences_at_their_own_positions(two_threads, monkeypatch):
    """``of_llama_step_rows`` (the serving engine's slot cache) with Gemma's blocks."""
    native.skip_without_kernel()
    native.assert_rows_step_matches(_model(torch.float32), fam.VOCAB, monkeypatch)


def _write_gemma_gguf(path, ref) -> None:
    """A "gemma" GGUF as llama.cpp's converter writes one: its metadata (key length, no rope base), every norm
    weight as 1 + weight, q/k rows in the Hugging Face order, no output head (tied)."""
    import numpy as np
    gguf = pytest.importorskip("gguf")

    cfg = ref.config
    w = gguf.GGUFWriter(str(path), "gemma")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    # the tensor names of the gguf package's map for the architecture
    arch = gguf.MODEL_ARCH.GEMMA
    names = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch]}
    hf = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
          "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    sd = {k: v.detach().float() for k, v in ref.state_dict().items()}
    tensors = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"] + 1}
    for i in range(cfg.num_hidden_layers):
        for short, name in hf.items():
            assert f"blk.{{bid}}.{short}" in names
            t = sd[f"model.layers.{i}.{name}.weight"]
            tensors[f"blk.{i}.{short}.weight"] = t + 1 if short.endswith("norm") else t
    assert "output" not in {n.split(".")[0] for n in tensors} and {"token_embd", "output_norm"} <= names
    for name, t in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(t.numpy(), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_loads_from_gguf_and_exports_it(tmp_path):
    pytest.importorskip("gguf")
    from openformers.export.gguf import save_gguf
    from openformers.quantization import GGUFQuantizationConfig

    ref = _reference(tmp_path / "ref")
    path = tmp_path / "gemma.gguf"
    _write_gemma_gguf(path, ref)
    ours = openformers.AutoModelForCausalLM.from_pretrained(str(path))
    assert type(ours).__name__ == "GemmaForCausalLM" and ours.config.head_dim == 24
    assert ours.config.hidden_act == "gelu_pytorch_tanh" and ours.config.tie_word_embeddings
    with torch.no_grad():  # (1 + w) - 1 in float32 loses the last bits of small weights
        fam.assert_close(ours.model.norm.weight, ref.model.norm.weight, atol=1e-7, what="final norm")
        fam.assert_close(ours(IDS).logits, ref(IDS).logits, atol=1e-5, what="Gemma from GGUF")
    # kept 4-bit: 4-bit projections, float norms (offset removed)
    quant = openformers.AutoModelForCausalLM.from_pretrained(
        str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32))
    with torch.no_grad():
        assert (quant(IDS).logits - ref(IDS).logits).abs().max() < 0.5
    # export: the norms go out as 1 + weight, and the file reads back as the same model
    out = tmp_path / "export.gguf"
    save_gguf(ours, out, dtype="f32")
    from openformers.core.gguf import GGUFFile

    gf = GGUFFile(out)
    try:
        assert gf.architecture == "gemma" and "output.weight" not in gf.tensors
        stored = gf.dequantize("blk.0.attn_norm.weight").reshape(-1)
    finally:
        gf.close()
    fam.assert_close(stored, ours.model.layers[0].input_layernorm.weight.detach() + 1, atol=0, what="stored norm")
    again = openformers.AutoModelForCausalLM.from_pretrained(str(out))
    with torch.no_grad():
        fam.assert_close(again(IDS).logits, ours(IDS).logits, atol=1e-5, what="exported and read back")
