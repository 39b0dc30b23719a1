"""Starcoder2: Llama's attention with biases on every projection, LayerNorms (weight and bias) and a plain
``c_proj(act(c_fc(x)))`` MLP, against transformers; and the runtime's fast path (the decode plan) for it, in
float32, bfloat16 and kept 4-bit."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import openformers
from openformers.modules.cache import DynamicCache
from openformers.modules.mlp import PlainMLP
from openformers.runtime import decode
from tests.models import llama_family as fam
from tests.runtime import native_checks as native
from tests.runtime.native_checks import two_threads  # noqa: F401 (a fixture)

pytest.importorskip("transformers")

STARCODER2 = {"hidden_act": "gelu_pytorch_tanh"}
HEADS = ("Model", "ForCausalLM", "ForSequenceClassification", "ForTokenClassification")


def _randomize_norms(model: nn.Module, seed: int = 5) -> None:
    """LayerNorm weights and biases away from their ones/zeros init, so a missed bias or weight shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if name.endswith("weight")
                        else torch.rand(p.shape, generator=g) - 0.5)


def _reference(path, **overrides):
    """A tiny transformers Starcoder2 with random norm weights and biases, saved to ``path``."""
    ref = fam.build_reference("Starcoder2ForCausalLM", "Starcoder2Config", path,
                              **fam.tiny_config(**{**STARCODER2, **overrides}))
    _randomize_norms(ref)
    ref.save_pretrained(path)
    return ref


IDS = torch.randint(3, fam.VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("head", HEADS)
def test_head_parity(head, tmp_path):
    fam.check_head_parity("Starcoder2", head, tmp_path, **STARCODER2)


def test_logits_and_loss_with_random_norms(tmp_path):
    ref = _reference(tmp_path)
    ours = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(ours).__name__ == "Starcoder2ForCausalLM"
    layer = ours.model.layers[0]
    assert isinstance(ours.model.norm, nn.LayerNorm) and isinstance(layer.input_layernorm, nn.LayerNorm)
    assert isinstance(layer.mlp, PlainMLP) and layer.mlp.c_fc.bias is not None
    assert all(getattr(layer.self_attn, n).bias is not None for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert ours.lm_head.weight is ours.model.embed_tokens.weight  # tied by default
    labels = IDS.clone()
    labels[:, :2] = -100
    with torch.no_grad():
        mine, theirs = ours(IDS, labels=labels), ref(IDS, labels=labels)
    fam.assert_close(mine.logits, theirs.logits, atol=1e-5, what="Starcoder2 float32 logits")
    fam.assert_close(mine.loss, theirs.loss, atol=1e-6, what="Starcoder2 loss")
    with torch.enable_grad():  # the module path (no runner) too
        fam.assert_close(ours(IDS).logits, theirs.logits, what="Starcoder2 float32 logits, module path")
    ours16, ref16 = ours.to(torch.bfloat16), ref.to(torch.bfloat16)
    with torch.no_grad():
        a, b = ours16(IDS).logits.float(), ref16(IDS).logits.float()
    assert (a - b).abs().max() <= 4 * 2**-8 * b.abs().max(), (a - b).abs().max()
    assert (a - b).abs().mean() <= 2**-9 * b.abs().max()


def test_training_dropouts_as_transformers(tmp_path):
    """Embedding and residual dropout at transformers' places: with the same seed, the same masks, so the same
    loss and gradients; in eval mode they are off."""
    ref = _reference(tmp_path, residual_dropout=0.2, embedding_dropout=0.3)
    ours = openformers.Starcoder2ForCausalLM.from_pretrained(tmp_path)
    assert ours.config.residual_dropout == 0.2 and ours.config.embedding_dropout == 0.3
    ours.train(), ref.train()
    losses = []
    for model in (ours, ref):
        torch.manual_seed(11)
        out = model(IDS, labels=IDS)
        out.loss.backward()
        losses.append((out.loss.detach(), model.model.embed_tokens.weight.grad.clone()))
    fam.assert_close(losses[0][0], losses[1][0], atol=1e-6, what="loss with dropouts")
    fam.assert_close(losses[0][1], losses[1][1], atol=1e-6, what="embedding grad with dropouts")
    torch.manual_seed(12)
    again = ours(IDS, labels=IDS).loss
    assert (again - losses[0][0]).abs() > 1e-4  # other masks, another loss: the dropouts are on
    ours.eval(), ref.eval()
    with torch.no_grad():
        fam.assert_close(ours(IDS).logits, ref(IDS).logits, what="eval: no dropout")


def test_generate_greedy_and_beam(tmp_path):
    ref = _reference(tmp_path)
    ours = openformers.Starcoder2ForCausalLM.from_pretrained(tmp_path).eval()
    ids, mask = fam.random_batch(fam.VOCAB, batch=2, seq=6, pad_last=2, left=True, seed=9)
    ids[mask == 0] = 0
    for kw in ({"do_sample": False}, {"do_sample": False, "num_beams": 3}):
        args = dict(attention_mask=mask, max_new_tokens=8, pad_token_id=0, eos_token_id=None, **kw)
        with torch.no_grad():
            theirs, mine = ref.generate(ids, **args), ours.generate(ids, **args)
        assert torch.equal(mine, theirs), f"generate {kw}: {mine.tolist()} != {theirs.tolist()}"


def test_sliding_window(tmp_path):
    """A window of 3 over every layer: the logits past the window equal transformers' (and differ from full
    attention's)."""
    ref = _reference(tmp_path, sliding_window=3)
    ours = openformers.Starcoder2ForCausalLM.from_pretrained(tmp_path).eval()
    assert ours.config.sliding_window == 3
    full = openformers.Starcoder2ForCausalLM.from_pretrained(tmp_path, sliding_window=None).eval()
    ids, mask = fam.random_batch(fam.VOCAB, batch=2, seq=9, pad_last=2, seed=3)
    with torch.no_grad():
        fam.assert_close(ours(IDS).logits, ref(IDS).logits, what="sliding window logits")
        fam.assert_close(ours(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits, mask=mask,
                         what="sliding window, padded batch")
        assert (full(IDS).logits[:, 4:] - ours(IDS).logits[:, 4:]).abs().max() > 1e-3


def test_padding():
    fam.check_padding("Starcoder2", **STARCODER2)


def test_cached_decoding():
    fam.check_cached_decoding("Starcoder2", **STARCODER2)


def test_eager_vs_sdpa():
    fam.check_eager_vs_sdpa("Starcoder2", **STARCODER2)


def test_gradient_checkpointing():
    fam.check_gradient_checkpointing("Starcoder2", **STARCODER2)


def test_tied_embeddings(tmp_path):
    fam.check_tied_embeddings("Starcoder2", tmp_path, **STARCODER2)


def test_save_here_load_in_transformers(tmp_path):
    import transformers

    torch.manual_seed(0)
    model = openformers.Starcoder2ForCausalLM(openformers.Starcoder2Config(**fam.tiny_config())).eval()
    _randomize_norms(model)
    model.save_pretrained(tmp_path)
    theirs = transformers.Starcoder2ForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        fam.assert_close(model(IDS).logits, theirs(IDS).logits, what="Starcoder2 saved here")


def test_config_defaults(tmp_path):
    import transformers

    ours, theirs = openformers.Starcoder2Config(), transformers.Starcoder2Config()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "norm_epsilon",
                "rope_parameters", "sliding_window", "attention_dropout", "residual_dropout", "embedding_dropout",
                "use_bias", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.rms_norm_eps == 1e-5 and ours.attention_bias and ours.mlp_bias  # Llama's names read Starcoder2's
    no_bias = openformers.Starcoder2Config(use_bias=False)
    assert not no_bias.attention_bias and not no_bias.mlp_bias
    with pytest.raises(ValueError, match="residual_dropout"):
        openformers.Starcoder2Config(residual_dropout=1.5)
    cfg = openformers.Starcoder2Config(**fam.tiny_config(norm_epsilon=1e-4, use_bias=False))
    cfg.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    assert "rms_norm_eps" not in text and "mlp_bias" not in text and "attention_bias" not in text
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "Starcoder2Config" and loaded.norm_epsilon == 1e-4 and not loaded.use_bias
    back = openformers.AutoConfig.from_pretrained(tmp_path)
    assert type(back).__name__ == "Starcoder2Config" and back.rms_norm_eps == 1e-4 and not back.attention_bias


# -- the runtime's fast path --------------------------------------------------------------------------------------


def _model(dtype: torch.dtype | None, **overrides) -> openformers.Starcoder2ForCausalLM:
    """A tiny Starcoder2 with random parameters; ``dtype`` None: kept 4-bit (128 wide for the native kernel)."""
    from openformers.quantization import GGUFQuantizationConfig

    size = dict(hidden_size=128, intermediate_size=256) if dtype is None else {}
    torch.manual_seed(0)
    model = openformers.Starcoder2ForCausalLM(openformers.Starcoder2Config(**fam.tiny_config(**{**size, **overrides})))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    _randomize_norms(model)
    if dtype is None:
        GGUFQuantizationConfig().quantize_model(model)
    return model.to(dtype or torch.float32).eval()


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (None, 1e-3)],
                         ids=["float32", "bfloat16", "q4"])
def test_decode_plan(dtype, atol, two_threads, caplog):
    """The plan runs LayerNorms and the plain MLP (no why-not line): its decode step's logits equal the module
    path's to rounding, and its greedy tokens are the module path's."""
    model = _model(dtype)
    if dtype is None:  # every projection kept 4-bit, c_fc and c_proj included
        from openformers.runtime.int4_native import is_int4

        mods = model.model.layers[0]
        assert is_int4(mods.mlp.c_fc) and is_int4(mods.mlp.c_proj) and is_int4(mods.self_attn.q_proj)
    decode._LOGGED.clear()
    ids = torch.randint(3, fam.VOCAB, (1, 12), generator=torch.Generator().manual_seed(4))
    with caplog.at_level(logging.DEBUG, logger="openformers.runtime"):
        cache = DynamicCache()
        with torch.inference_mode():
            model(ids[:, :-1], past_key_values=cache, use_cache=True)
            got = model(ids[:, -1:], past_key_values=cache, use_cache=True).logits[0, -1].float()
    assert decode.plan_of(model.model) is not None, caplog.text
    assert "the module path runs" not in caplog.text, caplog.text
    module = native.module_step(model, ids)  # the module path (the model's own forward, no runtime)
    torch.testing.assert_close(got, module, rtol=0, atol=max(atol, 1e-4) * module.abs().max().item())
    with torch.inference_mode():
        fast = model.generate(ids, max_new_tokens=10, do_sample=False)
    with torch.enable_grad():
        slow = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert torch.equal(fast, slow), (fast.tolist(), slow.tolist())


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (None, 1e-3)],
                         ids=["float32", "bfloat16", "q4"])
def test_native_step(dtype, atol, two_threads, monkeypatch, caplog):
    """The one-call native decode step runs Starcoder2's layer (LayerNorms, biased products, the plain MLP)."""
    native.skip_without_kernel()
    model = _model(dtype)
    decode._LOGGED.clear()
    ids = torch.randint(3, fam.VOCAB, (1, 12), generator=torch.Generator().manual_seed(4))
    native.assert_native_step_agrees(model, ids, atol, monkeypatch, caplog)


def test_optimizer_step_on_a_bias_is_seen_by_the_next_decode_step(two_threads, monkeypatch):
    """The native step adds float32 copies of the biases; an update of a bias in place (an optimizer step) makes
    them again before the next step."""
    native.skip_without_kernel()
    model = _model(torch.float32)
    ids = torch.randint(3, fam.VOCAB, (1, 8), generator=torch.Generator().manual_seed(6))
    layer = model.model.layers[1]
    native.assert_update_is_seen(model, ids, [layer.self_attn.q_proj.bias, layer.mlp.c_fc.bias,
                                              model.model.layers[0].input_layernorm.bias], monkeypatch)


def test_native_rows_step_for_sequences_at_their_own_positions(two_threads, monkeypatch):
    """``of_llama_step_rows`` (the serving engine's slot cache) with Starcoder2's blocks."""
    native.skip_without_kernel()
    native.assert_rows_step_matches(_model(torch.float32), fam.VOCAB, monkeypatch)


def _write_starcoder2_gguf(path, ref) -> None:
    """A "starcoder2" GGUF as llama.cpp's converter writes one: its metadata (LayerNorm epsilon, no rope
    reordering), every tensor under the name the gguf package's map gives its Hugging Face name (biases too),
    no output head when tied."""
    import numpy as np
    gguf = pytest.importorskip("gguf")

    cfg = ref.config
    w = gguf.GGUFWriter(str(path), "starcoder2")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_eps(cfg.norm_epsilon)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.STARCODER2, cfg.num_hidden_layers)
    for name, t in ref.state_dict().items():
        if cfg.tie_word_embeddings and name == "lm_head.weight":
            continue
        short = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert short is not None, name
        w.add_tensor(short, np.ascontiguousarray(t.detach().float().numpy(), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("tied", [True, False])
def test_loads_from_gguf_and_exports_it(tmp_path, tied):
    """A file of transformers' weights loads as Starcoder2 with its logits; ours exports, the file holds the
    norms' biases under llama.cpp's names and reads back bit for bit."""
    pytest.importorskip("gguf")
    from openformers.core.gguf import GGUFFile, read_gguf_metadata
    from openformers.export.gguf import save_gguf

    ref = _reference(tmp_path / "ref", norm_epsilon=1e-3, tie_word_embeddings=tied)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # projection biases away from their zero init, so a dropped one shows
        for name, p in ref.named_parameters():
            if name.endswith("bias") and "norm" not in name:
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)
    path = tmp_path / "starcoder2.gguf"
    _write_starcoder2_gguf(path, ref)
    ours = openformers.AutoModelForCausalLM.from_pretrained(str(path))
    assert type(ours).__name__ == "Starcoder2ForCausalLM"
    assert ours.config.hidden_act == "gelu_pytorch_tanh" and ours.config.tie_word_embeddings == tied
    assert ours.config.use_bias and ours.config.norm_epsilon == pytest.approx(1e-3)
    with torch.no_grad():
        fam.assert_close(ours.model.norm.bias, ref.model.norm.bias, atol=0, what="final norm bias")
        fam.assert_close(ours(IDS).logits, ref(IDS).logits, atol=1e-5, what="Starcoder2 from GGUF")
    out = tmp_path / "export.gguf"
    save_gguf(ours, out, dtype="f32")
    meta = read_gguf_metadata(out)
    assert meta["general.architecture"] == "starcoder2"
    assert meta["starcoder2.attention.layer_norm_epsilon"] == pytest.approx(1e-3)
    gf = GGUFFile(out)
    try:
        assert {"output_norm.bias", "blk.1.attn_norm.bias", "blk.1.ffn_norm.bias", "blk.1.ffn_up.bias",
                "blk.1.ffn_down.bias", "blk.1.attn_q.bias"} <= set(gf.tensors)
        assert "blk.0.ffn_gate.weight" not in gf.tensors and ("output.weight" in gf.tensors) == (not tied)
        stored = gf.dequantize("blk.0.attn_q.weight")  # rows in the Hugging Face order
    finally:
        gf.close()
    fam.assert_close(stored, ours.model.layers[0].self_attn.q_proj.weight.detach(), atol=0, what="stored q rows")
    again = openformers.AutoModelForCausalLM.from_pretrained(str(out))
    state = again.state_dict()
    for name, t in ours.state_dict().items():
        assert torch.equal(state[name], t), name
    # q4_0: kept 4-bit (QuantizedLinear c_fc/c_proj) gives the logits of the same file dequantized
    from openformers.quantization import GGUFQuantizationConfig

    q4 = save_gguf(ours, tmp_path / "q4_0.gguf", dtype="q4_0")
    kept = openformers.AutoModelForCausalLM.from_pretrained(
        str(q4), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32))
    assert type(kept.model.layers[0].mlp.c_fc).__name__ == "QuantizedLinear"
    deq = openformers.AutoModelForCausalLM.from_pretrained(str(q4))
    with torch.no_grad():
        fam.assert_close(kept(IDS).logits, deq(IDS).logits, atol=1e-4, what="q4_0 kept 4-bit vs dequantized")


def test_gguf_without_a_norm_bias_is_refused(tmp_path):
    """A "starcoder2" file that lacks a LayerNorm's bias names it instead of loading a model without it."""
    gguf = pytest.importorskip("gguf")
    from openformers.core.gguf import GGUFError
    from openformers.export.gguf import save_gguf

    model = _model(torch.float32)
    full = save_gguf(model, tmp_path / "full.gguf", dtype="f32")
    reader = gguf.GGUFReader(str(full))
    w = gguf.GGUFWriter(str(tmp_path / "cut.gguf"), "starcoder2")
    for field in reader.fields.values():
        if field.name.startswith("starcoder2."):
            w.add_key_value(field.name, field.contents(), field.types[0])
    for t in reader.tensors:
        if t.name != "blk.1.ffn_norm.bias":
            w.add_tensor(t.name, t.data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match=r"blk\.1\.ffn_norm\.bias"):
        openformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "cut.gguf"))
