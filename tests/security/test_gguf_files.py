"""Hostile GGUF files: every one is refused with a ``GGUFError`` naming the file, before anything
is sized from it, within a small memory bound."""
from __future__ import annotations

import struct

import pytest
import torch

pytest.importorskip("gguf")

from openformers.core.gguf import GGUFError, GGUFFile  # noqa: E402
from openformers.models.gguf_loading import read_gguf_config, read_gguf_model  # noqa: E402
from openformers.quantization.gguf_linear import GGUFQuantizationConfig, QuantizedLinear  # noqa: E402

from .ggufs import ARRAY, F32, STRING, U32, array, kv, raw_gguf, value, write_llama_gguf  # noqa: E402
from .memory import run_limited, modules_built, timed_load  # noqa: E402


def _load(path, **kwargs):
    from openformers.models.auto import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)


# -- 1. layer sizes that differ from each other or from the config ---------------------------
@pytest.mark.parametrize("quantized", [True, False])
def test_layer_wider_than_config_is_refused(tmp_path, quantized):
    path = write_llama_gguf(tmp_path / "wide.gguf", intermediate=[128, 1024])
    kwargs = {"quantization_config": GGUFQuantizationConfig()} if quantized else {}
    with pytest.raises(GGUFError, match=r"blk\.1\.ffn_up\.weight is \[1024, 64\].*implies \[128, 64\]"):
        _load(path, **kwargs)


def test_attention_rows_disagreeing_with_heads_are_refused(tmp_path):
    path = write_llama_gguf(tmp_path / "heads.gguf", heads=4, kv_heads=2,
                            metadata=lambda w: w.add_key_length(32))  # 4 heads x 32 = 128 rows, the file has 64
    with pytest.raises(GGUFError, match=r"attn_q\.weight is \[64, 64\].*implies \[128, 64\]"):
        read_gguf_model(path, quantization_config=GGUFQuantizationConfig())


def test_consistent_quantized_file_still_loads_and_generates(tmp_path):
    path = write_llama_gguf(tmp_path / "ok.gguf")
    model = _load(path, quantization_config=GGUFQuantizationConfig())
    assert isinstance(model.model.layers[1].mlp.up_proj, QuantizedLinear)
    out = model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def test_mismatched_layer_never_reaches_generate(tmp_path):
    """Before the fix this loaded and the native decode step corrupted the heap ("double free")."""
    path = write_llama_gguf(tmp_path / "wide.gguf", intermediate=[128, 1024])
    proc = run_limited(f"""
        import torch
        from openformers.core.gguf import GGUFError
        from openformers.models.auto import AutoModelForCausalLM
        from openformers.quantization.gguf_linear import GGUFQuantizationConfig
        try:
            m = AutoModelForCausalLM.from_pretrained({str(path)!r}, quantization_config=GGUFQuantizationConfig())
            m.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=4, do_sample=False)
            print("LOADED")
        except GGUFError as exc:
            print("REFUSED", exc)
    """, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "REFUSED" in proc.stdout and "ffn_up" in proc.stdout


def test_quantized_layer_refuses_tensors_of_another_shape():
    with torch.device("meta"):
        layer = QuantizedLinear(64, 32)
    with pytest.raises(ValueError, match=r"qweight has shape \[32, 64\].*needs \[32, 32\]"):
        layer._set_loaded_tensor("qweight", torch.zeros(32, 64, dtype=torch.uint8), torch.float32)
    with pytest.raises(ValueError, match="scales_and_zeros"):
        layer._set_loaded_tensor("scales_and_zeros", torch.zeros(4, 32, 2), torch.float32)
    with pytest.raises(ValueError, match="no tensor 'bias'"):
        layer._set_loaded_tensor("bias", torch.zeros(32), torch.float32)


# -- 2. small file, huge allocation -----------------------------------------------------------
def test_block_count_huge_under_memory_limit(tmp_path):
    path = write_llama_gguf(tmp_path / "blocks.gguf", qtype="F32", block_count=10**9)
    proc = timed_load(path, "GGUFError", "openformers.core.gguf")
    assert "REFUSED" in proc.stdout, proc.stderr[-2000:]
    assert "block_count = 1000000000, but the file holds layers 0 to 1" in proc.stdout
    assert modules_built(proc) < 50, proc.stdout  # refused before the layers are built, not after


def test_fewer_blocks_than_the_tensors_is_refused(tmp_path):
    path = write_llama_gguf(tmp_path / "blocks.gguf", qtype="F32", layers=3, block_count=1)
    with pytest.raises(GGUFError, match="block_count = 1"):
        read_gguf_model(path)


@pytest.mark.parametrize("field", ["n_tensors", "n_kv"])
def test_counts_the_file_cannot_hold_are_refused(tmp_path, field):
    path = tmp_path / "count.gguf"
    path.write_bytes(raw_gguf([kv("general.architecture", STRING, value(STRING, "llama"))], **{field: 2**62}))
    with pytest.raises(GGUFError, match=r"declares \d+ (tensors|metadata entries)"):
        GGUFFile(path)


def test_huge_array_count_is_refused(tmp_path):
    path = tmp_path / "array.gguf"
    entry = kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 2**60))
    path.write_bytes(raw_gguf([entry]))
    with pytest.raises(GGUFError, match="array items"):
        GGUFFile(path)


def test_tensor_dims_overflowing_int64_are_refused(tmp_path):
    path = tmp_path / "dims.gguf"
    path.write_bytes(raw_gguf([], [("t.weight", (2**40, 2**40), 0, 0)], data=b"\0" * 64))
    with pytest.raises(GGUFError, match="runs past the end"):
        GGUFFile(path)


def test_too_many_dims_are_refused(tmp_path):
    path = tmp_path / "dims.gguf"
    path.write_bytes(raw_gguf([], [("t.weight", (1,) * 9, 0, 0)], data=b"\0" * 64))
    with pytest.raises(GGUFError, match="9 dimensions"):
        GGUFFile(path)


# -- what the header says must be a cause, not a crash ------------------------------------------
def test_alignment_zero_is_refused(tmp_path):
    path = tmp_path / "align.gguf"
    path.write_bytes(raw_gguf([kv("general.alignment", U32, value(U32, 0))]))
    with pytest.raises(GGUFError, match="general.alignment = 0"):
        GGUFFile(path)


def test_deeply_nested_arrays_are_refused(tmp_path):
    payload = struct.pack("<IQ", F32, 0)
    for _ in range(5000):
        payload = struct.pack("<IQ", ARRAY, 1) + payload
    path = tmp_path / "nested.gguf"
    path.write_bytes(raw_gguf([kv("x", ARRAY, payload)]))
    with pytest.raises(GGUFError, match="nested deeper"):
        GGUFFile(path)


def test_zero_heads_are_refused(tmp_path):
    path = write_llama_gguf(tmp_path / "heads.gguf", qtype="F32",
                            metadata=lambda w: w.add_uint32("llama.attention.head_count", 0))
    with pytest.raises(GGUFError, match="head_count = 0"):
        read_gguf_config(path)


def test_size_of_the_wrong_type_is_refused(tmp_path):
    path = write_llama_gguf(tmp_path / "type.gguf", qtype="F32",
                            metadata=lambda w: w.add_string("llama.embedding_length", "abc"))
    with pytest.raises(GGUFError, match="embedding_length = 'abc'"):
        read_gguf_config(path)


def test_scores_shorter_than_the_tokens_are_refused(tmp_path):
    from openformers.tokenization.gguf import tokenizer_from_gguf

    path = tmp_path / "tok.gguf"
    entries = [kv("general.architecture", STRING, value(STRING, "llama")),
               kv("tokenizer.ggml.model", STRING, value(STRING, "llama")),
               kv("tokenizer.ggml.tokens", ARRAY, array(STRING, ["<unk>", "a", "b", "ab"])),
               kv("tokenizer.ggml.scores", ARRAY, array(F32, [0.0, -1.0]))]
    path.write_bytes(raw_gguf(entries))
    with pytest.raises(ValueError, match="tokenizer.ggml.scores must hold one number per token"):
        tokenizer_from_gguf(path)


def test_quantized_layer_sizes_must_be_positive_integers():
    for bad in (0, -32, 64.0, "64"):
        with pytest.raises(ValueError, match="in_features must be a positive integer"):
            QuantizedLinear(bad, 32)


def test_native_kernel_refuses_buffers_replaced_with_another_shape():
    from openformers.runtime import int4_native

    if not int4_native.fast():
        pytest.skip("the native int4 kernel does not run on this machine")
    layer = QuantizedLinear.from_linear(torch.nn.Linear(64, 32, bias=False))
    layer(torch.randn(2, 64))  # the native layout is in place
    layer.qweight = layer.qweight[:16].clone()  # half the rows the layer's sizes describe
    with pytest.raises(RuntimeError, match="do not hold the 32x64 4-bit weight"):
        layer(torch.randn(2, 64))
