"""GGUF loading: config and weights against transformers, tiny written files, keep-quantized path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from openformers.core.hub import embedded_model_path  # noqa: E402
from openformers.core.gguf import GGUFError, GGUFFile, read_gguf_metadata  # noqa: E402
from openformers.models.gguf_loading import read_gguf_config, read_gguf_model  # noqa: E402

PROMPTS = [[1, 504, 3458, 282, 4649, 314, 2], [1, 9690, 30, 15, 7, 4300], [2, 17, 1000, 40000, 123, 5, 99, 876, 12]]


def _smollm2() -> Path:
    try:
        return embedded_model_path("smollm2")
    except OSError as exc:
        pytest.skip(str(exc))


# -- a tiny GGUF written the way llama.cpp's converter writes it --------------------------
def _to_llama_cpp_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, the rotary halves interleaved pairwise."""
    d = w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_LLAMA_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def write_tiny_llama(
    path: Path, model, qtype: str = "F32", arch: str = "llama", skip: tuple[str, ...] = (), extend=None
) -> Path:
    """``extend(writer)``, when given, adds further metadata or tensors before the file is written."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    if getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    tensors: dict[str, np.ndarray] = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if not cfg.tie_word_embeddings:
        tensors["output.weight"] = sd["lm_head.weight"]
    for i in range(cfg.num_hidden_layers):
        for hf, short in _LLAMA_NAMES.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if short == "attn_q" and arch == "llama":  # llama.cpp reorders q/k rows for llama only
                t = _to_llama_cpp_rows(t, cfg.num_attention_heads)
            elif short == "attn_k" and arch == "llama":
                t = _to_llama_cpp_rows(t, cfg.num_key_value_heads)
            tensors[f"blk.{i}.{short}.weight"] = t
            if f"model.layers.{i}.{hf}.bias" in sd:
                tensors[f"blk.{i}.{short}.bias"] = sd[f"model.layers.{i}.{hf}.bias"]
    for name, t in tensors.items():
        if name in skip:
            continue
        q = getattr(gguf.GGMLQuantizationType, qtype)
        if t.ndim == 2 and qtype != "F32":
            w.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(t), q), raw_dtype=q)
        else:
            w.add_tensor(name, np.ascontiguousarray(t, dtype=np.float32))
    if extend is not None:
        extend(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_1"])
def test_tiny_llama_round_trip(tmp_path, tiny_llama, qtype):
    path = write_tiny_llama(tmp_path / f"tiny-{qtype}.gguf", tiny_llama, qtype)
    config, tensors = read_gguf_model(path)
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is False
    got = dict(tensors)
    ref = tiny_llama.state_dict()
    assert set(got) == set(ref) - {k for k in ref if "rotary" in k}
    for name, t in got.items():
        expect = ref[name].float()
        if expect.ndim == 2 and qtype != "F32":  # quantized whole rows: the q/k reordering commutes with it
            q = getattr(gguf.GGMLQuantizationType, qtype)
            expect = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(expect.numpy(), q), q))
        torch.testing.assert_close(t, expect, rtol=0, atol=0, msg=name)


def test_tiny_llama_logits_match_transformers(tmp_path, tiny_llama):
    from openformers.models.auto import AutoModelForCausalLM

    path = write_tiny_llama(tmp_path / "tiny.gguf", tiny_llama)
    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, tiny_llama(ids).logits, rtol=0, atol=1e-5)


def test_transformers_reads_our_test_writer_the_same(tmp_path, tiny_llama):
    # guards the test writer: transformers' GGUF reader must undo our q/k reordering too
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = write_tiny_llama(tmp_path / "tiny.gguf", tiny_llama)
    theirs = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=tiny_llama)["tensors"]
    for name in ("model.layers.1.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"):
        torch.testing.assert_close(theirs[name], tiny_llama.state_dict()[name], rtol=0, atol=0)


def test_keep_quantized_exact_for_q4_1(tmp_path, tiny_llama):
    from openformers.models.auto import AutoModelForCausalLM
    from openformers.quantization import GGUFQuantizationConfig, QuantizedLinear

    path = write_tiny_llama(tmp_path / "tiny-q41.gguf", tiny_llama, "Q4_1")
    dense = AutoModelForCausalLM.from_pretrained(str(path))
    quant = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32))
    q_proj = quant.model.layers[1].self_attn.q_proj
    assert isinstance(q_proj, QuantizedLinear) and isinstance(quant.lm_head, torch.nn.Linear)
    # Q4_1 blocks map onto the int4 kernel without loss (the q/k reordering applied to packed rows)
    torch.testing.assert_close(q_proj.dequantize(), dense.model.layers[1].self_attn.q_proj.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(quant.model.layers[0].mlp.down_proj.dequantize(), dense.model.layers[0].mlp.down_proj.weight, rtol=0, atol=1e-6)
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(quant(ids).logits, dense(ids).logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_keep_quantized_save_and_reload_is_bit_identical(tmp_path, tiny_llama, compute_dtype):
    import json

    from safetensors.torch import load_file

    from openformers.core.gguf import q4_blocks
    from openformers.models.auto import AutoModelForCausalLM
    from openformers.quantization import GGUFQuantizationConfig, QuantizedLinear
    from openformers.quantization.gguf_linear import to_nibbles

    path = write_tiny_llama(tmp_path / "tiny-q41.gguf", tiny_llama, "Q4_1")
    quant = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype))
    quant.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "gguf" and saved["compute_dtype"] == str(compute_dtype).replace("torch.", "")
    # the file holds the portable nibble layout, not the machine-specific kernel packing
    tensors = load_file(tmp_path / "saved" / "model.safetensors")
    gf = GGUFFile(path)
    q, _, _ = q4_blocks(gf.raw("blk.1.attn_v.weight"), "Q4_1")
    gf.close()
    assert torch.equal(tensors["model.layers.1.self_attn.v_proj.qweight"], to_nibbles(q))

    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert isinstance(again.config.quantization_config, GGUFQuantizationConfig)
    layers = {n: m for n, m in again.named_modules() if isinstance(m, QuantizedLinear)}
    assert len(layers) == 2 * 7 and isinstance(again.lm_head, torch.nn.Linear)
    before = dict(quant.named_buffers()) | dict(quant.named_parameters())
    after = dict(again.named_buffers()) | dict(again.named_parameters())
    assert set(before) == set(after)
    for name, t in before.items():
        assert after[name].dtype == t.dtype and torch.equal(after[name], t), name
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, quant(ids).logits)
    # load_state_dict takes the saved layout too
    quant.load_state_dict(again.state_dict())
    # (the in-memory layouts may differ: a layer that has run holds the native kernel's)
    assert torch.equal(quant.model.layers[0].mlp.up_proj._values(), again.model.layers[0].mlp.up_proj._values())
    with torch.no_grad():
        assert torch.equal(again(ids).logits, quant(ids).logits)


def test_llama_file_with_sliding_window_is_mistral(tmp_path):
    # llama.cpp writes Mistral as the "llama" architecture; the window metadata tells them apart
    transformers = pytest.importorskip("transformers")
    from openformers.models.auto import AutoModelForCausalLM

    config = transformers.MistralConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=4, tie_word_embeddings=False,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    reference = transformers.MistralForCausalLM(config).eval()
    path = write_tiny_llama(tmp_path / "tiny-mistral.gguf", reference)
    assert read_gguf_metadata(path)["general.architecture"] == "llama"
    ours = AutoModelForCausalLM.from_pretrained(str(path))
    assert type(ours).__name__ == "MistralForCausalLM" and ours.config.sliding_window == 4
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # 12 positions against a window of 4: the logits agree only if the window is applied
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)


def test_tiny_qwen2_logits_match_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from openformers.models.auto import AutoModelForCausalLM
    from openformers.quantization import GGUFQuantizationConfig

    config = transformers.Qwen2Config(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    ref = transformers.Qwen2ForCausalLM(config).eval()
    path = write_tiny_llama(tmp_path / "qwen2.gguf", ref, arch="qwen2")
    ours = AutoModelForCausalLM.from_pretrained(str(path))
    assert type(ours).__name__ == "Qwen2ForCausalLM"
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=0, atol=1e-5)
    # q/k/v biases stay float next to the 4-bit weights
    quant = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32))
    assert quant.model.layers[0].self_attn.q_proj.bias is not None
    with torch.no_grad():
        assert (quant(ids).logits - ref(ids).logits).abs().max() < 0.5


def write_tiny_gpt2(path: Path, model) -> Path:
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_block_count(cfg.n_layer)
    w.add_context_length(cfg.n_positions)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(4 * cfg.n_embd)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {"ln_1": "attn_norm", "ln_2": "ffn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    tensors = {"token_embd.weight": sd["transformer.wte.weight"], "position_embd.weight": sd["transformer.wpe.weight"],
               "output_norm.weight": sd["transformer.ln_f.weight"], "output_norm.bias": sd["transformer.ln_f.bias"]}
    for i in range(cfg.n_layer):
        for hf, short in names.items():
            weight = sd[f"transformer.h.{i}.{hf}.weight"]
            tensors[f"blk.{i}.{short}.weight"] = weight if short.endswith("norm") else weight.T  # Conv1D is [in, out]
            tensors[f"blk.{i}.{short}.bias"] = sd[f"transformer.h.{i}.{hf}.bias"]
    for name, t in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_tiny_gpt2_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    from openformers.models.auto import AutoModelForCausalLM

    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4)).eval()
    path = write_tiny_gpt2(tmp_path / "gpt2.gguf", ref)
    config = read_gguf_config(path)
    assert (config["model_type"], config["n_layer"], config["n_positions"], config["tie_word_embeddings"]) == ("gpt2", 2, 32, True)
    ours = AutoModelForCausalLM.from_pretrained(str(path))
    assert type(ours).__name__ == "GPT2LMHeadModel"
    ids = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q4_K"])
def test_native_dequantize_matches_gguf(kind):
    from openformers.core.gguf import _DEQUANT, TENSOR_TYPES

    qtype = getattr(gguf.GGMLQuantizationType, kind)
    block, size = next((b, n) for name, b, n in TENSOR_TYPES.values() if name == kind)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (8 * 512 // block, size), dtype=np.uint8)
    if block > 1:  # finite f16 scales at the start of every block (d, and dmin / m where present)
        raw[:, :4] = (rng.standard_normal((raw.shape[0], 2)) * 0.1).astype(np.float16).view(np.uint8)
    else:
        raw = np.frombuffer(rng.standard_normal(8 * 512).astype(np.float16 if kind == "F16" else np.float32).tobytes(), np.uint8)
        raw = raw[: 8 * 512 * 2].copy() if kind == "F16" else raw.reshape(-1, 4)[:, 2:].copy()  # bf16: top halves
    raw = raw.reshape(8, -1)
    ref = gguf.quants.dequantize(raw, qtype)
    np.testing.assert_array_equal(_DEQUANT[kind](raw).reshape(ref.shape), ref)


def test_q4_k_blocks_map_exactly_onto_int4_kernel():
    from openformers.core.gguf import q4_blocks
    from openformers.quantization import QuantizedLinear

    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (32 * 2, 144), dtype=np.uint8)
    raw[:, :4] = (np.abs(rng.standard_normal((64, 2))) * 0.01).astype(np.float16).view(np.uint8)
    raw = raw.reshape(32, 2 * 144)  # 32 rows of 512 values
    layer = QuantizedLinear.from_quantized(*q4_blocks(raw, "Q4_K"), compute_dtype=torch.float32)
    ref = torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_K))
    torch.testing.assert_close(layer.dequantize(), ref, rtol=0, atol=1e-6)
    x = torch.randn(3, 512)
    torch.testing.assert_close(layer(x), x @ ref.T, rtol=1e-4, atol=1e-4)


# -- bad input ---------------------------------------------------------------------------
def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(GGUFError, match=r"model\.gguf is not a GGUF file"):
        read_gguf_config(bad)


def test_truncated_file(tmp_path, tiny_llama):
    path = write_tiny_llama(tmp_path / "tiny.gguf", tiny_llama)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(GGUFError, match="runs past the end of the file"):
        GGUFFile(path)


def test_unsupported_architecture(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match=r"architecture 'mamba' is not supported.*'llama'"):
        read_gguf_config(tmp_path / "m.gguf")


def test_missing_tensor(tmp_path, tiny_llama):
    from openformers.models.auto import AutoModelForCausalLM

    path = write_tiny_llama(tmp_path / "tiny.gguf", tiny_llama, skip=("blk.1.ffn_up.weight",))
    with pytest.raises(GGUFError, match=r"lacks tensors .*blk\.1\.ffn_up\.weight"):
        AutoModelForCausalLM.from_pretrained(str(path))


def test_wrong_model_class(tmp_path, tiny_llama):
    from openformers.models.bert import BertModel

    path = write_tiny_llama(tmp_path / "tiny.gguf", tiny_llama)
    with pytest.raises(GGUFError, match="holds a 'llama' model"):
        BertModel.from_pretrained(str(path))


# -- the embedded SmolLM2 (Q4_1) ---------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_reference():
    """transformers' own GGUF conversion of the file: config and a LlamaForCausalLM."""
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = _smollm2()
    config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    model = transformers.LlamaForCausalLM(config)
    state = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # tied to the embeddings
    model.tie_weights()
    with torch.no_grad():
        logits = [model(torch.tensor([p])).logits for p in PROMPTS]
    return config, logits


@pytest.fixture(scope="module")
def smollm2_ours():
    from openformers.models.auto import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained("smollm2")


def test_smollm2_config_matches_transformers(smollm2_reference):
    from openformers.models.auto import AutoConfig

    theirs = smollm2_reference[0]
    ours = read_gguf_config(_smollm2())
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "vocab_size", "bos_token_id",
                "eos_token_id", "pad_token_id", "tie_word_embeddings", "head_dim"):
        assert ours[key] == getattr(theirs, key), key
    assert ours["rope_theta"] == theirs.rope_parameters["rope_theta"]
    cfg = AutoConfig.from_pretrained("smollm2")
    assert cfg.model_type == "llama" and cfg.num_key_value_heads == 3 and cfg.tie_word_embeddings


def test_smollm2_logits_match_transformers(smollm2_reference, smollm2_ours):
    assert type(smollm2_ours).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        for prompt, theirs in zip(PROMPTS, smollm2_reference[1]):
            torch.testing.assert_close(smollm2_ours(torch.tensor([prompt])).logits, theirs, rtol=0, atol=1e-4)


def test_smollm2_keep_quantized(smollm2_ours):
    from openformers.models.auto import AutoModelForCausalLM
    from openformers.quantization import GGUFQuantizationConfig, QuantizedLinear
    from openformers.quantization.gguf_linear import weight_bytes

    quant = AutoModelForCausalLM.from_pretrained("smollm2", quantization_config=GGUFQuantizationConfig())
    n_quant = sum(isinstance(m, QuantizedLinear) for m in quant.modules())
    assert n_quant == 30 * 7
    assert weight_bytes(quant) < 0.4 * weight_bytes(smollm2_ours)
    # the embedded file's projections are Q4_1: the 4-bit weights equal the dequantized ones
    # up to the bfloat16 rounding of the scales
    w = quant.model.layers[3].mlp.up_proj.dequantize()
    ref = smollm2_ours.model.layers[3].mlp.up_proj.weight
    assert (w - ref).abs().max() <= 0.01 * ref.abs().max()
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = torch.tensor([prompt])
            a, b = quant(ids).logits, smollm2_ours(ids).logits
            # bfloat16 activations in the int4 matmul: measured max |diff| 0.41 on logits up to ~35
            assert (a - b).abs().max() < 1.0, (a - b).abs().max()
            assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.85


def test_quantized_linear_passes_gradients_to_its_input():
    # QLoRA on a keep-quantized model: adapters below a frozen 4-bit layer must still train
    from openformers.core.gguf import q4_blocks
    from openformers.quantization import QuantizedLinear

    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (32 * 2, 144), dtype=np.uint8)
    raw[:, :4] = (np.abs(rng.standard_normal((64, 2))) * 0.01).astype(np.float16).view(np.uint8)
    layer = QuantizedLinear.from_quantized(*q4_blocks(raw.reshape(32, 2 * 144), "Q4_K"), compute_dtype=torch.float32)
    weight = layer.dequantize()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 512, generator=gen, requires_grad=True)
    upstream = torch.randn(3, 32, generator=gen)
    (layer(x) * upstream).sum().backward()  # linear in the output: the input gradient is upstream @ W
    torch.testing.assert_close(x.grad, upstream @ weight, rtol=1e-5, atol=1e-5)
