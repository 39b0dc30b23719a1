"""Every C entry point's sizes, strides and pointers are checked on the Python side of the call: a crafted
input gets a clear error (or the PyTorch path, where the wrapper already declines) instead of reaching the
kernel. One test per check; each kernel's tests are skipped where it does not build here."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from openformers import LlamaConfig, LlamaForCausalLM
from openformers.core import native as core_native
from openformers.modules import dropout as dropout_mod
from openformers.modules import rotary_native, swiglu_native
from openformers.modules.cache import DynamicCache
from openformers.runtime import attention_native, decode, int4_native, native_step as step_mod

if core_native.compiler() is None:
    pytest.skip("no C compiler: no native kernel is built here", allow_module_level=True)

fast_only = pytest.mark.skipif(not int4_native.fast(), reason="int4_native is not preferred here (not an x86 CPU)")


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))  # one thread keeps float32 layers column-major: no native step
    yield
    torch.set_num_threads(threads)


# ---- of_int4_matmul / NativeInt4 -------------------------------------------------------------------------------

def _int4(out_f=16, in_f=64):
    q = torch.randint(0, 16, (out_f, in_f), generator=torch.Generator().manual_seed(0))
    scale, zero = torch.rand(out_f, in_f // 32) / 8, torch.zeros(out_f, in_f // 32)
    return int4_native.NativeInt4.from_values(q, scale, zero)


@fast_only
@pytest.mark.parametrize("x, kwargs, match", [
    ((3, 32), {}, r"of_int4_matmul: x is \(3, 32\).*\[rows, 64\]"),  # the wrong in_features
    ((64,), {}, "of_int4_matmul: x is"),  # the wrong rank
    ((2, 64), {"out_dtype": torch.float16}, "out_dtype torch.float16"),  # neither float32 nor bfloat16 out
], ids=["in-features", "rank", "out-dtype"])
def test_int4_x_or_output_dtype_it_cannot_take_is_refused(x, kwargs, match):
    kernel = _int4()
    with pytest.raises(ValueError, match=match):
        kernel(torch.randn(x), **kwargs)


@fast_only
def test_int4_zero_rows_never_reach_the_kernel():
    assert _int4()(torch.randn(0, 64)).shape == (0, 16)


@fast_only
def test_int4_strided_x_is_made_contiguous():
    kernel = _int4()
    x = torch.randn(64, 3).t()
    torch.testing.assert_close(kernel(x), kernel(x.contiguous()), rtol=0, atol=0)


@fast_only
def test_int4_short_scale_pairs_are_refused():
    q, sz = int4_native.pack(torch.randint(0, 16, (16, 64)), torch.rand(16, 2, 2))
    with pytest.raises(ValueError, match="sz holds 32 values.*needs 64"):
        int4_native.NativeInt4(q, sz[:32].clone())


@fast_only
@pytest.mark.parametrize("shape", [(6, 32), (16, 48)])
def test_int4_weight_off_the_tiles_is_refused(shape):
    q = torch.zeros(shape, dtype=torch.uint8)
    sz = torch.zeros(shape[0] * (shape[1] * 2 // 32) * 2, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 4.*multiple of 64"):
        int4_native.NativeInt4(q, sz)


# ---- of_dense_matvec ------------------------------------------------------------------------------------------

@fast_only
@pytest.mark.parametrize("case", ["short x", "two rows", "float64 x", "strided weight", "bf16 weight"])
def test_dense_matvec_declines_what_it_cannot_read(case):
    w, x = torch.randn(8, 16), torch.randn(16)
    if case == "short x":
        x = torch.randn(12)
    elif case == "two rows":
        x = torch.randn(2, 16)
    elif case == "float64 x":
        x = x.double()
    elif case == "strided weight":
        w = torch.randn(16, 8).t()
    else:
        w = w.bfloat16()
    assert int4_native.dense_matvec(w, x) is None


@fast_only
def test_dense_matvec_still_runs_for_one_row():
    w, x = torch.randn(8, 16), torch.randn(1, 16)
    torch.testing.assert_close(int4_native.dense_matvec(w, x), x @ w.t(), rtol=1e-5, atol=1e-5)


# ---- of_llama_step / NativeStep -------------------------------------------------------------------------------

def _model(layers=2):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def _decode(model, ids):
    plan = decode.plan_of(model.model)
    if plan is not None:
        plan.native.clear()
    cache = DynamicCache()
    with torch.inference_mode():
        model(ids[:, :-1], past_key_values=cache, use_cache=True)
        logits = model(ids[:, -1:], past_key_values=cache, use_cache=True).logits[0, -1]
    plan = decode.plan_of(model.model)
    return logits, [s for s in plan.native.values() if s is not None]


def _parts(model, dtype=torch.float32):
    """(layers, weights found) as native_step sees them, for a step built by hand."""
    ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(1))
    _, steps = _decode(model, ids)
    assert steps, "the native step did not run on the well-formed model"
    plan = decode.plan_of(model.model)
    hidden = torch.zeros(1, 1, 64, dtype=dtype)
    kernels = plan._resolve(hidden, (dtype, 1, torch.get_num_threads()))
    weights = [[step_mod._weight(parts, fn, dtype) for parts, fn in
                (((q, k, v), qkv_fn), ((o,), o_fn), ((gate, up), gu_fn), ((down,), down_fn))]
               for (_, _, q, k, v, o, _, gate, up, down, *_), (qkv_fn, o_fn, gu_fn, down_fn) in zip(plan.layers, kernels)]
    return plan, kernels, weights, steps[0]


def _widen_mlp(model, layer, inter):
    mlp = model.model.layers[layer].mlp
    with torch.no_grad():
        mlp.gate_proj = nn.Linear(64, inter, bias=False)
        mlp.up_proj = nn.Linear(64, inter, bias=False)
        mlp.down_proj = nn.Linear(inter, 64, bias=False)
    model.eval()


@fast_only
@pytest.mark.parametrize("quantized", [False, True])
def test_llama_step_declines_a_layer_with_its_own_mlp_width(quantized):
    # one layer's MLP 512 wide where the others are 128: the kernel would apply 128 to it
    model = _model(3)
    ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(2))
    _widen_mlp(model, 1, 512)
    if quantized:  # 4-bit layers on the native kernel, as a GGUF file loaded with GGUFQuantizationConfig gives
        from openformers.quantization import GGUFQuantizationConfig

        GGUFQuantizationConfig().quantize_model(model)
        model = model.to(torch.bfloat16).eval()
        assert int4_native.is_int4(model.model.layers[1].mlp.down_proj)
    got, steps = _decode(model, ids)
    assert decode.plan_of(model.model) is not None  # the plan ran the step
    assert not steps  # through PyTorch's layers, each with its own sizes
    reference = copy.deepcopy(model)
    with torch.inference_mode():
        expect = reference(ids, use_cache=False).logits[0, -1]
    torch.testing.assert_close(got.float(), expect.float(), rtol=0, atol=(5e-2 if quantized else 1e-4) * expect.abs().max().item())


@fast_only
@pytest.mark.parametrize("what", ["o", "qkv", "down"])
def test_llama_step_refuses_one_layers_projection_of_another_size(what):
    model = _model()
    plan, kernels, weights, _ = _parts(model)
    struct, held = weights[1][{"qkv": 0, "o": 1, "gate_up": 2, "down": 3}[what]]
    bad = step_mod.Int4Weight.from_buffer_copy(struct)
    bad.in_ = struct.in_ * 2
    weights[1][{"qkv": 0, "o": 1, "down": 3}[what]] = (bad, held)
    with pytest.raises(ValueError, match=f"of_llama_step: layer 1 {what} is"):
        step_mod.NativeStep(int4_native.library(), plan.layers, weights, torch.float32)


@fast_only
def test_llama_step_refuses_plain_weight_splits_off_the_tiles():
    model = _model()
    plan, _, weights, _ = _parts(model)
    struct, held = weights[0][2]
    bad = step_mod.Int4Weight.from_buffer_copy(struct)
    bad.split1 = 6
    weights[0][2] = (bad, held)
    with pytest.raises(ValueError, match="layer 0 gate_up .plain. has splits 6"):
        step_mod.NativeStep(int4_native.library(), plan.layers, weights, torch.float32)


@fast_only
def test_llama_step_refuses_a_plain_weight_shorter_than_its_structure():
    model = _model()
    plan, _, weights, _ = _parts(model)
    struct, held = weights[1][3]  # down: [64, 128]
    weights[1][3] = (struct, [held[0][:32].clone()])
    with pytest.raises(ValueError, match=r"layer 1 down is|layer 1 down \(plain\)"):
        step_mod.NativeStep(int4_native.library(), plan.layers, weights, torch.float32)


@fast_only
def test_llama_step_refuses_a_4bit_structure_not_pointing_into_its_kernel():
    model = _model(3)
    from openformers.quantization import GGUFQuantizationConfig

    GGUFQuantizationConfig().quantize_model(model)
    model = model.to(torch.bfloat16).eval()
    plan, _, weights, _ = _parts(model, torch.bfloat16)
    struct, held = weights[2][3]
    assert isinstance(held, int4_native.NativeInt4)
    weights[2][3] = (struct, weights[0][1][1])  # another layer's kernel
    with pytest.raises(ValueError, match="layer 2 down .4-bit. does not point into"):
        step_mod.NativeStep(int4_native.library(), plan.layers, weights, torch.bfloat16)


@fast_only
def test_llama_step_refuses_a_norm_of_another_size_or_dtype():
    model = _model()
    plan, _, weights, _ = _parts(model)
    norm = model.model.layers[1].post_attention_layernorm
    norm.weight = nn.Parameter(torch.ones(32))
    with pytest.raises(ValueError, match=r"layer 1 post_attention_layernorm.weight is \(32,\)"):
        step_mod.NativeStep(int4_native.library(), plan.layers, weights, torch.float32)
    norm.weight = nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="layer 1 post_attention_layernorm.weight is .64,. torch.bfloat16"):
        step_mod.NativeStep(int4_native.library(), plan.layers, weights, torch.float32)


@fast_only
def test_llama_step_refuses_heads_that_differ_by_layer():
    model = _model()
    plan, _, weights, _ = _parts(model)
    model.model.layers[1].self_attn.num_key_value_heads = 1
    with pytest.raises(ValueError, match="layer 1: heads 4, kv heads 1"):
        step_mod.NativeStep(int4_native.library(), plan.layers, weights, torch.float32)
    assert step_mod.native_step(plan.layers, plan._resolve(torch.zeros(1, 1, 64), (torch.float32, 1, 2)),
                                torch.zeros(1, 1, 64), torch.zeros(1, 1, 16)) is None


def _call(step, hidden, cache, head_dim=16):
    cos = torch.ones(hidden.shape[0], 1, head_dim)
    return step(hidden, cos, torch.zeros_like(cos), cache)


def _filled_cache(layers=2, batch=1, n=5, dtype=torch.float32):
    cache = DynamicCache()
    for i in range(layers):
        cache.update(i, torch.randn(batch, 2, n, 16, dtype=dtype), torch.randn(batch, 2, n, 16, dtype=dtype))
    return cache


@fast_only
@pytest.mark.parametrize("hidden, head_dim, match", [
    ((1, 1, 32, torch.float32), 16, r"of_llama_step: hidden states \(1, 1, 32\).*\[batch, 1, 64\]"),
    ((1, 1, 64, torch.bfloat16), 16, "hidden states .* torch.bfloat16"),
    ((1, 1, 64, torch.float32), 8, r"of_llama_step: cos \(1, 1, 8\)"),
], ids=["hidden-width", "hidden-dtype", "cos-head-size"])
def test_llama_step_refuses_hidden_states_or_cos_it_cannot_take(hidden, head_dim, match):
    _, _, _, step = _parts(_model())
    *shape, dtype = hidden
    with pytest.raises(ValueError, match=match):
        _call(step, torch.randn(*shape, dtype=dtype), _filled_cache(), head_dim=head_dim)


def _short(n, bufs):  # buffers exactly as long as what they hold: no room for the new position
    return [(k[:, :, :n].clone(), v[:, :, :n].clone()) for k, v in bufs]


def _strided(n, bufs):  # layer 1's keys not contiguous
    k, v = bufs[1]
    return [bufs[0], (k.transpose(1, 2).contiguous().transpose(1, 2), v)]


def _other_batch(n, bufs):  # layer 1's cache for a batch of two
    k, v = bufs[1]
    return [bufs[0], (torch.cat([k, k]), torch.cat([v, v]))]


def _step_on_buffers(monkeypatch, buffers):
    """The step on a filled cache whose ``reserve_all`` hands out ``buffers(n, bufs)``: (output, cache)."""
    _, _, _, step = _parts(_model())
    cache = _filled_cache()
    real = cache.reserve_all

    def reserve_all(add):
        n, bufs = real(add)
        return n, buffers(n, bufs)
    monkeypatch.setattr(cache, "reserve_all", reserve_all)
    return _call(step, torch.randn(1, 1, 64), cache), cache


@fast_only
def test_llama_step_declines_a_cache_without_room(monkeypatch):
    out, cache = _step_on_buffers(monkeypatch, _short)
    assert out is None
    assert cache.get_seq_length() == 5  # nothing written


@fast_only
@pytest.mark.parametrize("buffers", [_strided, _other_batch], ids=["non-contiguous", "other-batch"])
def test_llama_step_declines_one_layers_cache_buffer_it_cannot_read(monkeypatch, buffers):
    assert _step_on_buffers(monkeypatch, buffers)[0] is None


@fast_only
def test_llama_step_declines_a_cache_of_another_dtype():
    _, _, _, step = _parts(_model())
    assert _call(step, torch.randn(1, 1, 64), _filled_cache(dtype=torch.bfloat16)) is None


@fast_only
def test_llama_step_still_runs_on_a_well_formed_cache():
    _, _, _, step = _parts(_model())
    cache = _filled_cache()
    out = _call(step, torch.randn(1, 1, 64), cache)
    assert out is not None and out.shape == (1, 1, 64) and cache.get_seq_length() == 6


# ---- of_swiglu / of_swiglu_backward ---------------------------------------------------------------------------

swiglu_here = pytest.mark.skipif(not swiglu_native._LIBRARY.runs_here(), reason="swiglu_native is not built here")


@swiglu_here
@pytest.mark.parametrize("up, match", [
    (lambda: torch.randn(4, 4), "of_swiglu: up is \\(4, 4\\)"),  # another size
    (lambda: torch.randn(8, 4).t(), "of_swiglu: up .*contiguous: False"),  # not contiguous
], ids=["size", "non-contiguous"])
def test_swiglu_up_it_cannot_read_is_refused(up, match):
    gate = torch.randn(4, 8, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        swiglu_native._SwiGLU.apply(gate, up())


@swiglu_here
def test_swiglu_backward_gradient_of_another_size_is_refused():
    class Ctx:
        saved_tensors = (torch.randn(4, 8), torch.randn(4, 8))
    with torch.no_grad(), pytest.raises(ValueError, match="of_swiglu_backward: grad is \\(4, 2\\)"):
        swiglu_native._SwiGLU.backward(Ctx(), torch.randn(4, 2))


# ---- of_rotary ------------------------------------------------------------------------------------------------

rotary_here = pytest.mark.skipif(not rotary_native._LIBRARY.runs_here(), reason="rotary_native is not built here")


def _rot(x_shape=(2, 3, 5, 8), cos_shape=(1, 1, 5, 8)):
    return torch.randn(x_shape, requires_grad=True), torch.randn(cos_shape), torch.randn(cos_shape)


def _rot_strided_sin():
    x, cos, _ = _rot()
    return x, cos, torch.randn(1, 1, 10, 8)[:, :, ::2]


def _rot_transposed_cos():
    x, _, _ = _rot()
    cos = torch.randn(1, 1, 8, 5).transpose(2, 3)
    return x, cos, cos


def _rot_float64():
    x, cos, sin = _rot()
    return x, cos.double(), sin.double()


@rotary_here
@pytest.mark.parametrize("inputs, match", [
    (lambda: _rot(cos_shape=(1, 1, 4, 8)), "of_rotary: x \\(2, 3, 5, 8\\), cos \\(1, 1, 4, 8\\)"),
    (lambda: _rot((1, 1, 5, 7), (1, 1, 5, 7)), "an even head size"),
    (_rot_strided_sin, "equal strides"),
    (_rot_transposed_cos, "of_rotary: cos .*last stride of 1"),
    (lambda: _rot(cos_shape=(3, 1, 5, 8)), "of_rotary"),
    (_rot_float64, "of_rotary: cos .*torch.float64"),
], ids=["cos-shorter-than-sequence", "odd-head-size", "sin-of-other-strides", "last-stride-not-one",
        "cos-of-another-batch", "float64"])
def test_rotary_inputs_it_cannot_read_are_refused(inputs, match):
    x, cos, sin = inputs()
    with pytest.raises(ValueError, match=match):
        rotary_native._Rotary.apply(x, cos, sin)


# ---- of_dropout_mask / of_dropout_product / of_dropout_product_backward ---------------------------------------

dropout_here = pytest.mark.skipif(dropout_mod._LIBRARY.get() is None, reason="dropout_native is not built here")


@dropout_here
def test_dropout_mask_ids_shorter_than_the_rows_are_refused():
    with pytest.raises(ValueError, match="of_dropout_mask: ids is \\(2,\\).*10 contiguous int64"):
        dropout_mod.seeded_mask(1, 10, 4, 0.5, ids=torch.arange(2))


@dropout_here
def test_keep_mask_ids_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="of_dropout_mask: ids"):
        dropout_mod.keep_mask((6, 8), 0.5, torch.device("cpu"), ids=torch.arange(5))


@dropout_here
def test_dropout_product_ids_shorter_than_the_rows_are_refused():
    with pytest.raises(ValueError, match="of_dropout_product: ids"):
        dropout_mod.dropout_product(torch.randn(4, 8), torch.randn(3, 8), 0.5, ids=torch.arange(3))


@dropout_here
@pytest.mark.parametrize("x, a, p, match", [
    (lambda: torch.randn(4, 8), (3, 6), 0.5, "of_dropout_product: a is \\(3, 6\\).*\\[3, 8\\]"),  # a of another width
    (lambda: torch.randn(4, 8), (3, 8), 1.0, "of_dropout_product: p=1.0"),  # p out of range
    (lambda: torch.randn(8, 4).t(), (3, 8), 0.5, "of_dropout_product: x .*contiguous: False"),  # x not contiguous
], ids=["a-width", "p-range", "non-contiguous-x"])
def test_dropout_product_inputs_it_cannot_take_are_refused(x, a, p, match):
    with pytest.raises(ValueError, match=match):
        dropout_mod._DropoutProduct.apply(x(), torch.randn(a), p, 7, None)


@dropout_here
def test_dropout_product_backward_gradient_of_another_shape_is_refused():
    class Ctx:
        saved_tensors = (torch.randn(4, 8), torch.randn(3, 8), None)
        p, seed, needs_input_grad = 0.5, 7, (True, True)
    with torch.no_grad(), pytest.raises(ValueError, match="of_dropout_product_backward: g is \\(4, 2\\)"):
        dropout_mod._DropoutProduct.backward(Ctx(), torch.randn(4, 2))


@dropout_here
def test_dropout_product_still_runs():
    x = torch.randn(4, 8, requires_grad=True)
    a = torch.randn(3, 8, requires_grad=True)
    out = dropout_mod.dropout_product(x, a, 0.5)
    out.sum().backward()
    assert out.shape == (4, 3) and x.grad.shape == (4, 8) and a.grad.shape == (3, 8)


@pytest.mark.parametrize("case", ["dtype", "width", "queries", "row_stride", "bias_dtype", "bias_shape", "bias_strided"])
def test_encoder_attention_declines_what_it_cannot_read(case):
    b, s, h, d = 2, 4, 2, 4
    qkv, bias, q_len = torch.randn(b * s, 3 * h * d), torch.zeros(b, s), s
    if case == "dtype":
        qkv = qkv.double()
    elif case == "width":
        qkv = qkv[:, :-1]
    elif case == "queries":
        q_len = s + 1
    elif case == "row_stride":
        qkv = torch.randn(3 * h * d, b * s).t()  # columns apart: not rows of values
    elif case == "bias_dtype":
        bias = bias.double()
    elif case == "bias_shape":
        bias = torch.zeros(b, s - 1)
    else:
        bias = torch.zeros(s, b).t()
    assert attention_native.encoder_attention(qkv, b, s, h, d, bias, 0.5, q_len) is None


def test_encoder_attention_still_runs():
    if attention_native._LIBRARY.get() is None:
        pytest.skip("attention_native is not built here")
    out = attention_native.encoder_attention(torch.randn(2 * 4, 3 * 8), 2, 4, 2, 4, torch.zeros(2, 4), 0.5, 4)
    assert out is not None and out.shape == (2, 4, 8)


@fast_only
def test_a_product_with_biases_on_some_parts_only_runs_pytorchs_layers():
    """q/k/v (or gate/up) where one part has a bias and the others none: no native step (PyTorch's layers), not
    an error in the middle of decoding."""
    model = _model()
    plan, kernels, _, _ = _parts(model)
    q = plan.layers[1][2]
    q.bias = nn.Parameter(torch.zeros(q.out_features))
    hidden = torch.zeros(1, 1, 64)
    assert step_mod.native_step(plan.layers, kernels, hidden, torch.zeros(1, 1, 16)) is None
