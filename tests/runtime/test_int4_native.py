"""The native kernels (``int4_native.c``): the 4-bit products against float64, the portable build, the
layout ``QuantizedLinear`` keeps, and the one-call decode step of Llama models (4-bit and plain weights)."""
from __future__ import annotations

import ctypes

import pytest
import torch

from openformers import LlamaConfig, LlamaForCausalLM
from openformers.core import native as core_native
from openformers.modules.cache import DynamicCache
from openformers.quantization import GGUFQuantizationConfig, QuantizedLinear
from openformers.runtime import int4_native as native

from tests.runtime import native_checks

if core_native.compiler() is None:
    pytest.skip("no C compiler: the native kernel is not built here (PyTorch's kernel runs)", allow_module_level=True)


@pytest.fixture(autouse=True)
def _threads():
    """At least two threads: with one, float32 layers keep the column-major layout of ``fused.py`` (faster
    for a row there) and the native step, which reads row-major weights, does not apply to them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    yield
    torch.set_num_threads(threads)


def _weights(out_f: int, in_f: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (out_f, in_f), generator=g, dtype=torch.uint8)
    scale = (torch.rand(out_f, in_f // 32, generator=g) * 0.05 + 0.01).bfloat16().float()
    zero = (torch.randn(out_f, in_f // 32, generator=g) * 0.1).bfloat16().float()
    return q, scale, zero


def _reference(q, scale, zero, x):
    w = (q.double() - 8).view(q.shape[0], -1, 32) * scale.double()[..., None] + zero.double()[..., None]
    return x.bfloat16().double() @ w.view(q.shape[0], -1).t()  # the kernel multiplies bfloat16 activations


FAST = native.fast()
# off x86, layers and decode steps keep PyTorch's kernels (the portable build is still tested below)
fast_only = pytest.mark.skipif(not FAST, reason="not an x86 CPU: the native products and step are not used")


def test_the_library_builds_with_the_fast_products_here():
    native.build()  # raises with the compiler's message on failure
    assert native.library() is not None
    flags = core_native.cpu()  # the CPU's flags, as the build key reads them
    if "avx512_bf16" in flags:
        assert native.simd() == "AVX-512 BF16", "this CPU has AVX-512 BF16: the bfloat16 dot products must be built"
    if " avx2" in flags and " fma" in flags:
        assert native.simd() in ("AVX-512 BF16", "AVX-512F", "AVX2+FMA"), "this CPU has AVX2 and FMA: SIMD products"
    if native._X86:
        assert FAST


@pytest.mark.parametrize("out_f,in_f", [(16, 64), (20, 128), (96, 576), (576, 1536)])
@pytest.mark.parametrize("rows", [1, 3, 9])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_products_match_float64(out_f, in_f, rows, x_dtype):
    q, scale, zero = _weights(out_f, in_f)
    kernel = native.NativeInt4.from_values(q, scale, zero)
    x = torch.randn(rows, in_f, generator=torch.Generator().manual_seed(1)).to(x_dtype)
    expect = _reference(q, scale, zero, x)
    got = kernel(x, torch.float32)
    torch.testing.assert_close(got.double(), expect, rtol=1e-5, atol=1e-5 * expect.abs().max().item())
    got16 = kernel(x, torch.bfloat16)
    assert got16.dtype == torch.bfloat16
    torch.testing.assert_close(got16, got.bfloat16(), rtol=0, atol=0)  # one rounding of the float32 sums


def test_portable_build_gives_the_same_products():
    # -march=x86-64: neither AVX-512 nor AVX2, the portable loops (the SIMD builds: test_int4_simd.py)
    lib = native.load(native.build(("-march=x86-64",)))
    assert lib.of_has_bf16_dot() == 0 and native.simd(lib) == "portable"
    q, scale, zero = _weights(40, 192, seed=3)
    fast = native.NativeInt4.from_values(q, scale, zero)
    portable = native.NativeInt4.from_values(q, scale, zero)
    portable.lib = lib
    x = torch.randn(6, 192, generator=torch.Generator().manual_seed(4))
    expect = fast(x, torch.float32)
    torch.testing.assert_close(portable(x, torch.float32), expect, rtol=1e-5, atol=1e-5 * expect.abs().max().item())


def test_ctypes_view_matches_the_c_structures():
    lib = native._LIBRARY.get()
    if lib is None:
        pytest.skip("no C compiler or OPENFORMERS_NATIVE=0")
    assert native.struct_mismatch(lib) is None
    assert native.library() is lib


def test_product_refuses_sizes_the_layout_cannot_have():
    # of_int4_matmul checks the sizes it is handed before reading: out a positive multiple of 4, in of 64, rows >= 0
    lib = native._LIBRARY.get()
    if lib is None:
        pytest.skip("no C compiler or OPENFORMERS_NATIVE=0")
    q, scale, zero = _weights(8, 64)
    kernel = native.NativeInt4.from_values(q, scale, zero)
    x, y = torch.zeros(2, 64), torch.zeros(2, 8)
    for out_f, in_f, rows in ((6, 64, 2), (0, 64, 2), (8, 96, 2), (8, 0, 2), (8, 64, -1)):
        bad = native.Int4Weight(kernel.q.data_ptr(), kernel.sz.data_ptr(), out_f, in_f, None, None, None, out_f, out_f)
        assert lib.of_int4_matmul(ctypes.byref(bad), x.data_ptr(), 0, rows, y.data_ptr(), 0, 1) == -2
    assert lib.of_int4_matmul(kernel.ref, x.data_ptr(), 0, 0, y.data_ptr(), 0, 1) == 0  # no rows: nothing written
    assert lib.of_int4_matmul(kernel.ref, x.data_ptr(), 0, 2, y.data_ptr(), 0, 0) == 0  # threads < 1: one
    assert torch.equal(y, kernel(x))


def test_pack_and_unpack_are_inverse():
    q, scale, zero = _weights(24, 128, seed=5)
    pairs = torch.stack([scale, zero], dim=-1).bfloat16()
    packed, tiled = native.pack(q, pairs)
    assert packed.shape == (24, 64) and packed.dtype == torch.uint8 and tiled.dtype == torch.bfloat16
    assert torch.equal(native.unpack(packed), q)
    assert torch.equal(native.untile_pairs(tiled, 24), pairs)


def _linear(out_f=64, in_f=128, compute_dtype=torch.bfloat16) -> QuantizedLinear:
    lin = torch.nn.Linear(in_f, out_f, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(6)))
    return QuantizedLinear.from_linear(lin, 32, compute_dtype)


@fast_only
def test_layer_keeps_its_buffers_and_runs_on_a_tiled_copy():
    layer = _linear()
    values, state = layer._values(), {k: v.clone() for k, v in layer.state_dict().items()}
    dense = layer.dequantize()
    x = torch.randn(2, 128, generator=torch.Generator().manual_seed(7))
    buffers = {k: (v.data_ptr(), v.stride()) for k, v in layer.state_dict(keep_vars=True).items()}
    with torch.no_grad():
        y = layer(x)
    assert layer._native() is not None and torch.equal(layer._values(), values)
    for k, v in layer.state_dict(keep_vars=True).items():  # running leaves the layer's storage alone
        assert (v.data_ptr(), v.stride()) == buffers[k], k
    for k, v in layer.state_dict().items():  # the checkpoint layout does not depend on the kernel
        assert torch.equal(v, state[k]), k
    torch.testing.assert_close(layer.dequantize(), dense, rtol=0, atol=1e-6)
    expect = x.bfloat16().double() @ dense.double().t() + layer.bias.double()
    torch.testing.assert_close(y.double(), expect, rtol=1e-4, atol=1e-4)
    fresh = _linear()
    fresh.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), y)


def test_float32_compute_dtype_keeps_pytorch_kernel():
    layer = _linear(compute_dtype=torch.float32)
    with torch.no_grad():
        layer(torch.randn(1, 128))
    assert layer._native() is None


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("OPENFORMERS_NATIVE", "0")
    assert native.library() is None and not native.fast()
    layer = _linear()
    with torch.no_grad():
        layer(torch.randn(1, 128))
    assert layer._native() is None


def test_cache_reserve_and_advance():
    cache = DynamicCache()
    k = torch.randn(1, 2, 5, 8)
    cache.update(0, k, k + 1)
    kbuf, vbuf, n = cache.reserve(0, 1)
    assert n == 5 and kbuf.shape[-2] >= 6 and torch.equal(kbuf[..., :5, :], k) and torch.equal(vbuf[..., :5, :], k + 1)
    kbuf[..., 5, :] = 7.0
    cache.advance(0, 1)
    assert cache.get_seq_length() == 6 and torch.equal(cache.keys[0][..., 5, :], torch.full((1, 2, 8), 7.0))
    again, _, n = cache.reserve(0, 1)
    assert n == 6 and again.data_ptr() == kbuf.data_ptr()  # room left: written in place


def _tiny_int4(dtype: torch.dtype, layers: int = 3, quantized: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
        for layer in model.model.layers:  # norm weights near one, as trained models have
            layer.input_layernorm.weight.uniform_(0.8, 1.2)
            layer.post_attention_layernorm.weight.uniform_(0.8, 1.2)
    if quantized:
        GGUFQuantizationConfig().quantize_model(model)
    return model.to(dtype).eval()


_pick, _native_used, _step = native_checks.pick, native_checks.native_used, native_checks.step


LENGTHS = (5, 63, 64, 65, 72)  # prompt lengths: the steps cross the cache's first capacity (64)


@fast_only
@pytest.mark.parametrize("quantized", [True, False])
def test_native_decode_step_matches_the_pytorch_layers(quantized, monkeypatch):
    # float32: each step from the same cache; the operators agree to summation order
    model = _tiny_int4(torch.float32, quantized=quantized)
    ids = torch.randint(3, 256, (1, 72), generator=torch.Generator().manual_seed(8))
    for length in LENGTHS:
        got, used = _step(model, ids[:, :length], True, monkeypatch)
        assert used, "the native step did not run"
        expect, used = _step(model, ids[:, :length], False, monkeypatch)
        assert not used
        scale = expect.abs().max().item()
        assert scale > 1
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-4 * scale, msg=lambda m: f"prompt of {length}: {m}")


@fast_only
@pytest.mark.parametrize("quantized", [True, False])
def test_native_bfloat16_step_is_as_accurate_as_the_pytorch_layers(quantized, monkeypatch):
    # bfloat16: both round every operator's result; measured against the float32 model, the native step's
    # error is that of PyTorch's bfloat16 operators (within a quarter)
    ids = torch.randint(3, 256, (1, 72), generator=torch.Generator().manual_seed(8))
    model32, model16 = _tiny_int4(torch.float32, quantized=quantized), _tiny_int4(torch.bfloat16, quantized=quantized)
    ours, theirs = [], []
    for length in LENGTHS:
        truth, _ = _step(model32, ids[:, :length], False, monkeypatch)
        got, used = _step(model16, ids[:, :length], True, monkeypatch)
        assert used
        expect, _ = _step(model16, ids[:, :length], False, monkeypatch)
        ours.append((got - truth).abs() / truth.abs().max())
        theirs.append((expect - truth).abs() / truth.abs().max())
    ours, theirs = torch.stack(ours), torch.stack(theirs)
    assert 0 < theirs.mean() < 0.05  # bfloat16 errors, not more
    assert ours.mean() <= 1.25 * theirs.mean(), (ours.mean(1), theirs.mean(1))
    assert ours.amax() <= 1.5 * theirs.amax(), (ours.amax(1), theirs.amax(1))


@fast_only
@pytest.mark.parametrize("quantized", [True, False])
def test_native_greedy_decoding_follows_the_pytorch_layers(quantized, monkeypatch):
    # many steps: each path rounds activations to bfloat16 for the products, so a difference in the last
    # bit of a sum can move later values by a bfloat16 step; the greedy tokens stay the same
    model = _tiny_int4(torch.float32, quantized=quantized)
    ids = torch.randint(3, 256, (1, 20), generator=torch.Generator().manual_seed(10))
    runs = []
    for native_on in (True, False):
        _pick(model, native_on, monkeypatch)
        with torch.inference_mode():
            runs.append(model.generate(ids, max_new_tokens=24, do_sample=False))
        assert _native_used(model) == native_on
    assert torch.equal(runs[0], runs[1])


@fast_only
def test_native_decode_step_not_taken_for_batches_and_masks(monkeypatch):
    model = _tiny_int4(torch.float32, layers=1)
    ids = torch.randint(3, 256, (2, 6), generator=torch.Generator().manual_seed(9))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    from openformers.runtime import decode

    plan = decode.plan_of(model.model)
    assert all(step is None for step in plan.native.values())
    # the same greedy tokens as each prompt alone (which does run the native step)
    for row in range(2):
        alone = ids[row : row + 1, 2:] if row == 0 else ids[row : row + 1]
        with torch.inference_mode():
            single = model.generate(alone, max_new_tokens=3, do_sample=False)
        assert torch.equal(single[0, -3:], out[row, -3:])
    assert any(step is not None for step in plan.native.values())


@fast_only
@pytest.mark.parametrize("native_on", [True, False])
def test_strided_rows_on_either_kernel(native_on, monkeypatch):
    # the last position of a batch of prompts is a strided view; PyTorch's kernel takes contiguous rows only
    if not native_on:
        monkeypatch.setenv("OPENFORMERS_NATIVE", "0")
    layer = _linear()
    x = torch.randn(8, 5, 128, generator=torch.Generator().manual_seed(11)).bfloat16()[:, -1:]
    assert not x.reshape(8, 128).is_contiguous()
    with torch.no_grad():
        got = layer(x)
    assert (layer._native() is not None) == native_on
    expect = x.double().reshape(8, 128) @ layer.dequantize().double().t() + layer.bias.double()
    torch.testing.assert_close(got.double().reshape(8, -1), expect, rtol=2e-2, atol=5e-2)


def test_cache_reserve_all_and_advance_all():
    cache = DynamicCache()
    for i in range(2):
        cache.update(i, torch.full((1, 2, 3, 4), float(i)), torch.full((1, 2, 3, 4), float(i) + 0.5))
    n, bufs = cache.reserve_all(1)
    assert n == 3 and len(bufs) == 2
    for i, (k, v) in enumerate(bufs):
        k[..., 3, :] = 10.0 + i
        v[..., 3, :] = 20.0 + i
    cache.advance_all(1)
    assert cache.get_seq_length() == 4 and cache.keys[1][0, 0, 3, 0] == 11.0 and cache.values[0][0, 1, 3, 0] == 20.0
    n, again = cache.reserve_all(1)
    assert n == 4 and again[0] is bufs[0]  # unchanged: the same buffers, in place
    cache.crop(2)  # replaced from outside: reserved anew, the kept positions copied
    n, moved = cache.reserve_all(1)
    assert n == 2 and torch.equal(moved[0][0][..., :2, :], torch.zeros(1, 2, 2, 4))
    cache.keys[1] = cache.keys[1][..., :1, :]
    cache.values[1] = cache.values[1][..., :1, :]
    with pytest.raises(ValueError, match="layer 1 holds 1 positions and layer 0 2"):
        cache.reserve_all(1)


@fast_only
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_native_step_with_sizes_off_the_kernel_blocks(dtype, atol, monkeypatch):
    # plain weights: 100 intermediate features (not a whole number of 32- or 64-value blocks), head size 16
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=100, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).to(dtype).eval()
    ids = torch.randint(3, 128, (1, 9), generator=torch.Generator().manual_seed(12))
    got, used = _step(model, ids, True, monkeypatch)
    assert used
    expect, _ = _step(model, ids, False, monkeypatch)
    torch.testing.assert_close(got, expect, rtol=0, atol=atol * expect.abs().max().item())


@fast_only
@pytest.mark.parametrize("quantized", [True, False])
def test_native_step_for_a_batch_without_padding(quantized, monkeypatch):
    # three sequences of one length: no mask, one native call for all rows; each row as PyTorch's layers give it
    model = _tiny_int4(torch.float32, quantized=quantized)
    ids = torch.randint(3, 256, (3, 66), generator=torch.Generator().manual_seed(13))
    got, used = _step_rows(model, ids, True, monkeypatch)
    assert used
    for row in range(3):  # as one sequence alone: 4-bit products in the same order (the same bits); plain
        alone, _ = _step_rows(model, ids[row : row + 1], True, monkeypatch)  # float32 ones blocked by 4 rows
        if quantized:
            assert torch.equal(got[row], alone[0]), row
        else:
            torch.testing.assert_close(got[row], alone[0], rtol=1e-5, atol=1e-5 * alone.abs().max().item())
    expect, used = _step_rows(model, ids, False, monkeypatch)
    assert not used
    # against PyTorch's layers: float32 to summation order, where a last-bit difference may move an
    # activation's bfloat16 rounding in the 4-bit products (a few thousandths here)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-2 * expect.abs().max().item())
    # per-row positions without a mask: the rows are not at one position, PyTorch's layers run
    _pick(model, True, monkeypatch)
    cache = DynamicCache()
    with torch.inference_mode():
        model.model(ids[:, :-1], past_key_values=cache, use_cache=True)
        positions = torch.tensor([[65], [64], [65]])
        shifted = model.model(ids[:, -1:], past_key_values=cache, use_cache=True,
                              position_ids=positions).last_hidden_state[:, -1].float()
    assert not torch.allclose(shifted[1], expect[1], atol=1e-2)
    torch.testing.assert_close(shifted[0], expect[0], rtol=0, atol=1e-2 * expect.abs().max().item())


def _step_rows(model, ids, native_on, monkeypatch):
    """The decoder's last hidden states after one decode step of every row (the LM head's kernel depends
    on the number of rows, so its logits would not compare bit for bit)."""
    _pick(model, native_on, monkeypatch)
    cache = DynamicCache()
    with torch.inference_mode():
        model.model(ids[:, :-1], past_key_values=cache, use_cache=True)
        hidden = model.model(ids[:, -1:], past_key_values=cache, use_cache=True).last_hidden_state[:, -1].float()
    return hidden, _native_used(model)


@fast_only
@pytest.mark.parametrize("threads", [1, 3])
def test_native_step_at_other_thread_counts(threads, monkeypatch):
    # one thread runs every phase itself; three split the tiles and heads unevenly
    model = _tiny_int4(torch.float32)
    ids = torch.randint(3, 256, (1, 30), generator=torch.Generator().manual_seed(14))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got, used = _step(model, ids, True, monkeypatch)
        expect, _ = _step(model, ids, False, monkeypatch)
    finally:
        torch.set_num_threads(before)
    assert used
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-2 * expect.abs().max().item())


@fast_only
def test_native_step_gives_way_to_a_cache_of_uneven_layers(monkeypatch):
    model = _tiny_int4(torch.float32, layers=2)
    ids = torch.randint(3, 256, (1, 8), generator=torch.Generator().manual_seed(15))
    _pick(model, True, monkeypatch)
    cache = DynamicCache()
    with torch.inference_mode():
        model(ids[:, :-1], past_key_values=cache, use_cache=True)
        cache.keys[1], cache.values[1] = cache.keys[1][..., :5, :], cache.values[1][..., :5, :]
        out = model(ids[:, -1:], past_key_values=cache, use_cache=True).logits  # PyTorch's layers, no error
    assert torch.isfinite(out).all() and [k.shape[-2] for k in cache.keys] == [8, 6]


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_native_step_with_per_head_qk_norms(dtype, atol, monkeypatch):
    """Qwen3's layer (the qk_norm block) in one native call: the q and k heads normed before the rotary, as
    PyTorch's layers give them. Plain weights, the step forced on (it runs on the portable build too)."""
    import openformers
    from tests.models.llama_family import tiny_config

    monkeypatch.setattr(native, "fast", lambda: True)
    torch.manual_seed(0)
    model = openformers.Qwen3ForCausalLM(openformers.Qwen3Config(**tiny_config())).to(dtype).eval()
    with torch.no_grad():  # norm weights other than ones, so a missed norm shows
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    ids = torch.randint(3, 128, (1, 9), generator=torch.Generator().manual_seed(3))
    got, used = _step(model, ids, True, monkeypatch)
    assert used
    expect, used = _step(model, ids, False, monkeypatch)
    assert not used
    torch.testing.assert_close(got, expect, rtol=0, atol=atol * expect.abs().max().item())


def test_step_structures_match_the_c_side():
    """The ctypes views of of_llama_layer and of_llama have the library's sizes and offsets."""
    from openformers.runtime import native_step

    lib = native.library()
    assert lib is not None and native_step.layout_mismatch(lib) is None
