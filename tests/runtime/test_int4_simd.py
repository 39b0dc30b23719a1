"""The builds of ``int4_native.c`` for CPUs without AVX-512 BF16: float32 products with AVX-512F/BW
(``-mno-avx512bf16``, an Ice Lake's instructions), with AVX2 + FMA (``-march=x86-64-v3``, a Zen 2/3's) and the
portable loops (``-march=x86-64``),
each built into its own cached library and loaded beside the default one. Their 4-bit products, dense rows
and decode steps (Llama, Qwen3's per-head q/k norms, Gemma's offset norms and tanh-GELU, Qwen2's and Starcoder2's
biases, Starcoder2's LayerNorms and plain MLP, 4-bit and plain,
float32 and bfloat16) against float64, the PyTorch layers and the default build. A variant is skipped where this CPU lacks its
instructions."""
from __future__ import annotations

import pytest
import torch

from openformers.core import native as core_native
from openformers.runtime import int4_native as native
from tests.runtime import test_int4_native as base

if core_native.compiler() is None:
    pytest.skip("no C compiler: the native kernel is not built here", allow_module_level=True)

# name -> (extra compiler flags, the CPU flags its instructions need, what of_simd reports)
VARIANTS = {
    "avx512f": (("-mno-avx512bf16",), ("avx512f", "avx512bw"), "AVX-512F"),
    "avx2": (("-march=x86-64-v3",), ("avx2", "fma", "bmi2", "f16c", "movbe"), "AVX2+FMA"),
    "portable": (("-march=x86-64",), ("sse2",), "portable"),  # an x86-64 CPU without AVX2: the plain loops
}


def _cpu_flags() -> set[str]:
    lines = core_native._cpuinfo("flags") or []
    return {f for line in lines for f in line.split(":", 1)[-1].split()}


def variant_library(name: str):
    """The library of variant ``name``, built with its flags (cached like the default one); skips the test
    where this CPU lacks the variant's instructions."""
    flags, needs, simd = VARIANTS[name]
    if not native._X86:
        pytest.skip("the variants are x86 builds")
    missing = sorted(set(needs) - _cpu_flags())
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)}: the {name} build cannot run here")
    lib = native.load(native.build(flags))
    assert native.simd(lib) == simd and lib.of_has_bf16_dot() == 0
    assert native.struct_mismatch(lib) is None
    return lib


@pytest.fixture(params=list(VARIANTS))
def variant(request, monkeypatch):
    """Everything that asks ``int4_native.library()`` (layers, fused kernels, the decode step) gets the variant."""
    lib = variant_library(request.param)
    monkeypatch.setattr(native, "library", lambda: lib)
    monkeypatch.setattr(native, "_FAST", [])
    assert native.fast()
    return lib


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("out_f,in_f", [(16, 64), (20, 128), (96, 576), (576, 1536)])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_products_match_float64_and_the_bf16_dot_build(variant, out_f, in_f, x_dtype):
    q, scale, zero = base._weights(out_f, in_f)
    kernel = native.NativeInt4.from_values(q, scale, zero)
    assert kernel.lib is variant
    dot = native.NativeInt4.from_values(q, scale, zero)
    dot.lib = native._LIBRARY.get()
    for rows in (1, 3, 9):
        x = torch.randn(rows, in_f, generator=torch.Generator().manual_seed(rows)).to(x_dtype)
        expect = base._reference(q, scale, zero, x)
        got = kernel(x, torch.float32)
        torch.testing.assert_close(got.double(), expect, rtol=1e-5, atol=1e-5 * expect.abs().max().item())
        # the bf16-dot build: the same bfloat16 activations and float32 sums, in another order
        torch.testing.assert_close(got, dot(x, torch.float32), rtol=1e-5, atol=1e-5 * expect.abs().max().item())
        torch.testing.assert_close(kernel(x, torch.bfloat16), got.bfloat16(), rtol=0, atol=0)
        # a row alone (one-row loop) and in blocks of 4 (four-row loop) sum in one order: the same bits
        alone = torch.cat([kernel(x[i: i + 1], torch.float32) for i in range(rows)])
        assert torch.equal(alone, got)


def test_activations_are_rounded_to_bfloat16(variant):
    # a float32 activation that bfloat16 cannot hold: the product is that of its rounding, as in every build
    q = torch.full((4, 64), 9, dtype=torch.uint8)  # (9 - 8) * 1 + 0 = 1 everywhere
    kernel = native.NativeInt4.from_values(q, torch.ones(4, 2), torch.zeros(4, 2))
    x = torch.full((1, 64), 1 + 2 ** -12)
    assert torch.equal(kernel(x, torch.float32), torch.full((1, 4), 64.0))


@pytest.mark.parametrize("out_f,in_f", [(8, 16), (37, 100), (576, 1536)])
def test_dense_rows(variant, out_f, in_f):
    g = torch.Generator().manual_seed(out_f)
    w, x = torch.randn(out_f, in_f, generator=g), torch.randn(1, in_f, generator=g)
    got = native.dense_matvec(w, x)
    assert got is not None
    expect = x.double() @ w.double().t()
    torch.testing.assert_close(got.double(), expect, rtol=1e-5, atol=1e-5 * expect.abs().max().item())


@pytest.mark.parametrize("quantized", [True, False])
def test_decode_step_matches_the_pytorch_layers(variant, quantized, monkeypatch):
    model = base._tiny_int4(torch.float32, quantized=quantized)
    ids = torch.randint(3, 256, (1, 72), generator=torch.Generator().manual_seed(8))
    for length in (5, 64, 72):
        got, used = base._step(model, ids[:, :length], True, monkeypatch)
        assert used, "the native step did not run"
        expect, used = base._step(model, ids[:, :length], False, monkeypatch)
        assert not used
        scale = expect.abs().max().item()
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-4 * scale, msg=lambda m: f"prompt of {length}: {m}")


@pytest.mark.parametrize("quantized", [True, False])
def test_bfloat16_step_is_as_accurate_as_the_pytorch_layers(variant, quantized, monkeypatch):
    ids = torch.randint(3, 256, (1, 66), generator=torch.Generator().manual_seed(8))
    model32, model16 = base._tiny_int4(torch.float32, quantized=quantized), base._tiny_int4(torch.bfloat16, quantized=quantized)
    ours, theirs = [], []
    for length in (5, 64, 66):
        truth, _ = base._step(model32, ids[:, :length], False, monkeypatch)
        got, used = base._step(model16, ids[:, :length], True, monkeypatch)
        assert used
        expect, _ = base._step(model16, ids[:, :length], False, monkeypatch)
        ours.append((got - truth).abs() / truth.abs().max())
        theirs.append((expect - truth).abs() / truth.abs().max())
    ours, theirs = torch.stack(ours), torch.stack(theirs)
    assert 0 < theirs.mean() < 0.05
    assert ours.mean() <= 1.25 * theirs.mean(), (ours.mean(1), theirs.mean(1))
    assert ours.amax() <= 1.5 * theirs.amax(), (ours.amax(1), theirs.amax(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_step_matches_the_bf16_dot_build(variant, dtype, monkeypatch):
    # the same 4-bit model's step on the variant and on the default build: float32 sums in another order, where
    # a last-bit difference can move an activation's bfloat16 rounding in the next product; three random layers
    # amplify that to ~1% of the logits' scale here (PyTorch's own int4 kernel lies ~5% from the default build)
    model = base._tiny_int4(dtype)
    ids = torch.randint(3, 256, (1, 30), generator=torch.Generator().manual_seed(9))
    got, used = base._step(model, ids, True, monkeypatch)
    assert used
    monkeypatch.setattr(native, "library", native._LIBRARY.get)  # the default build from here on
    native._KERNELS.clear()
    model = base._tiny_int4(dtype)
    expect, used = base._step(model, ids, True, monkeypatch)
    assert used
    atol = (2e-2 if dtype == torch.float32 else 5e-2) * expect.abs().max().item()
    torch.testing.assert_close(got, expect, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_step_with_sizes_off_the_vector_widths(variant, dtype, atol, monkeypatch):
    # plain weights: 100 intermediate features (not a whole number of 8 or 16 lanes), head size 16
    from openformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=100, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).to(dtype).eval()
    ids = torch.randint(3, 128, (1, 9), generator=torch.Generator().manual_seed(12))
    got, used = base._step(model, ids, True, monkeypatch)
    assert used
    expect, _ = base._step(model, ids, False, monkeypatch)
    torch.testing.assert_close(got, expect, rtol=0, atol=atol * expect.abs().max().item())


def test_batch_step_rows_match_each_row_alone(variant, monkeypatch):
    # three sequences of one length in one call (the four-row 4-bit loop) give each row's bits alone
    model = base._tiny_int4(torch.float32)
    ids = torch.randint(3, 256, (3, 40), generator=torch.Generator().manual_seed(13))
    got, used = base._step_rows(model, ids, True, monkeypatch)
    assert used
    for row in range(3):
        alone, _ = base._step_rows(model, ids[row: row + 1], True, monkeypatch)
        assert torch.equal(got[row], alone[0]), row
    expect, _ = base._step_rows(model, ids, False, monkeypatch)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-2 * expect.abs().max().item())


@pytest.mark.parametrize("quantized", [True, False])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_qwen3_step_with_per_head_qk_norms(variant, quantized, dtype, atol, monkeypatch):
    import openformers
    from openformers.quantization import GGUFQuantizationConfig
    from tests.models.llama_family import tiny_config

    torch.manual_seed(0)
    model = openformers.Qwen3ForCausalLM(openformers.Qwen3Config(**tiny_config(intermediate_size=128))).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    if quantized:
        GGUFQuantizationConfig().quantize_model(model)
    _native_matches_pytorch(model.to(dtype).eval(), atol, monkeypatch)


def _native_matches_pytorch(model, atol, monkeypatch):
    """One step of ``model`` on the native step equals the PyTorch layers' within ``atol`` of the largest value."""
    ids = torch.randint(3, 128, (1, 9), generator=torch.Generator().manual_seed(3))
    got, used = base._step(model, ids, True, monkeypatch)
    assert used
    expect, used = base._step(model, ids, False, monkeypatch)
    assert not used
    torch.testing.assert_close(got, expect, rtol=0, atol=atol * expect.abs().max().item())


@pytest.mark.parametrize("quantized", [True, False])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_gemma_step_with_offset_norms_and_tanh_gelu(variant, quantized, dtype, atol, monkeypatch):
    """Gemma's layer: RMSNorms times float32 copies of 1 + weight, rounded once, and tanh-GELU(gate) * up."""
    import openformers
    from openformers.quantization import GGUFQuantizationConfig
    from tests.models.llama_family import tiny_config

    torch.manual_seed(0)
    model = openformers.GemmaForCausalLM(openformers.GemmaConfig(**tiny_config(intermediate_size=128, head_dim=16)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(-0.5, 0.5)
    if quantized:
        GGUFQuantizationConfig().quantize_model(model)
    _native_matches_pytorch(model.to(dtype).eval(), atol, monkeypatch)


@pytest.mark.parametrize("family", ["Qwen2", "Starcoder2"])
@pytest.mark.parametrize("quantized", [True, False])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_biased_steps_qwen2_and_starcoder2(variant, family, quantized, dtype, atol, monkeypatch):
    """Biases added to the products (Qwen2's q/k/v; Starcoder2's every product, with LayerNorms and the plain
    tanh-GELU MLP), random so that a missed or doubled one shows."""
    import openformers
    from openformers.quantization import GGUFQuantizationConfig
    from tests.models.llama_family import tiny_config

    torch.manual_seed(0)
    model = getattr(openformers, f"{family}ForCausalLM")(getattr(openformers, f"{family}Config")(
        **tiny_config(intermediate_size=128)))
    biases = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.uniform_(-0.5, 0.5) if name.endswith("bias") else p.uniform_(0.5, 1.5)
                biases += name.endswith("bias")
    # two layers: q/k/v each; q/k/v/o, c_fc, c_proj and two LayerNorms each, and the final LayerNorm
    assert biases == (6 if family == "Qwen2" else 17)
    if quantized:
        GGUFQuantizationConfig().quantize_model(model)
    _native_matches_pytorch(model.to(dtype).eval(), atol, monkeypatch)


def test_greedy_tokens_follow_the_pytorch_layers(variant, monkeypatch):
    model = base._tiny_int4(torch.float32)
    ids = torch.randint(3, 256, (1, 20), generator=torch.Generator().manual_seed(10))
    runs = []
    for native_on in (True, False):
        base._pick(model, native_on, monkeypatch)
        with torch.inference_mode():
            runs.append(model.generate(ids, max_new_tokens=16, do_sample=False))
        assert base._native_used(model) == native_on
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layers_run_the_kernel_of_their_row_count(variant, dtype, monkeypatch):
    # a 4-bit layer's rows run on this build's products, or on PyTorch's int4 kernel for bfloat16 rows from the row
    # count of PYTORCH_FROM_ROWS up (the AVX-512F build from 2 rows); either way a row's result does not depend on
    # the other rows of the call, and a row alone and float32 rows run here
    layer = base._linear(out_f=64, in_f=128)
    limit = native.PYTORCH_FROM_ROWS.get(native.simd(variant)) if dtype == torch.bfloat16 else None
    calls: list[int] = []
    real = native.NativeInt4.__call__

    def counted(self, x, *args):
        calls.append(x.shape[0])
        return real(self, x, *args)

    monkeypatch.setattr(native.NativeInt4, "__call__", counted)
    x = torch.randn(9, 128, generator=torch.Generator().manual_seed(9)).to(dtype)
    dense = layer.dequantize().double()
    with torch.no_grad():
        full = layer(x)
        for rows in (1, 2, 3, 4, 9):
            calls.clear()
            y = layer(x[:rows])
            assert y.dtype == dtype
            assert calls == ([rows] if limit is None or rows < limit else []), (rows, calls)
            expect = x[:rows].bfloat16().double() @ dense.t() + layer.bias.double()
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            torch.testing.assert_close(y.double(), expect, rtol=tol, atol=tol * expect.abs().max().item())
            if rows > 1 or limit is None:
                assert torch.equal(y, full[:rows])  # the same bits in a call of 9 rows
            if rows > 1:
                assert torch.equal(layer(x[rows - 2: rows]), full[rows - 2: rows])
