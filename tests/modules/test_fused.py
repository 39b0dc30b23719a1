"""Inference projections (modules/fused.py): fused groups share the layers' storage, weights keep
their row-major layout, float32 products of a few rows split across threads, and nothing of it
shows in values, training or checkpoints."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from openformers.models.llama import LlamaConfig, LlamaForCausalLM
from openformers.modules.cache import DynamicCache
from openformers.modules import packed_weights
from openformers.modules import fused
from openformers.modules.fused import transposed_layout


def _tiny(**kw) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, **kw)
    return LlamaForCausalLM(cfg).eval()


def _storages(model: nn.Module) -> int:
    """Bytes of the distinct storages behind the parameters."""
    seen = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    return sum(seen.values())


IDS = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def two_threads():
    """The layouts depend on the thread count (float32 weights are stored [in, out] at one thread):
    every test starts at two threads and leaves the count as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_fused_weights_share_storage_and_match_the_plain_path():
    model = _tiny(attention_bias=True)
    expected = model(IDS).logits.detach()  # grad enabled: plain per-layer path
    before = _storages(model)
    with torch.inference_mode():
        torch.testing.assert_close(model(IDS).logits, expected, rtol=0, atol=1e-5)
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    ptrs = {m.weight.untyped_storage().data_ptr() for m in (attn.q_proj, attn.k_proj, attn.v_proj)}
    assert len(ptrs) == 1 and attn.q_proj.bias.untyped_storage().data_ptr() == attn.v_proj.bias.untyped_storage().data_ptr()
    assert mlp.gate_proj.weight.untyped_storage().data_ptr() == mlp.up_proj.weight.untyped_storage().data_ptr()
    assert _storages(model) <= before  # no second copy of any weight
    # row-major slices of the fused buffer; the tied head and embeddings stay one parameter
    assert attn.q_proj.weight.is_contiguous() and attn.o_proj.weight.is_contiguous()
    assert model.lm_head.weight.is_contiguous() and model.lm_head.weight is model.model.embed_tokens.weight
    assert attn.q_proj.weight.requires_grad and not attn.q_proj.weight.is_inference()  # still trainable
    # in-place updates reach the fused matmul (the buffer is the weights' storage)
    with torch.no_grad():
        attn.k_proj.weight.mul_(2.0)
    changed = model(IDS).logits.detach()
    assert not torch.allclose(changed, expected)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, changed, rtol=0, atol=1e-5)


def test_training_and_checkpoints_after_inference(tmp_path):
    model = _tiny()
    with torch.no_grad():
        model.generate(IDS, max_new_tokens=3, do_sample=False)
    reference = _tiny()  # the same initial weights, never run at inference
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    for (name, a), b in zip(loaded.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    # a training step on the fused weights computes the gradients of the plain ones, bitwise: each
    # fused weight is a row-major slice of the buffer and takes the kernel the plain weight takes
    grads = []
    for m in (model, reference):
        m.train()
        m(IDS, labels=IDS).loss.backward()
        grads.append([p.grad.clone() for p in m.parameters()])
        torch.optim.SGD(m.parameters(), lr=1e-2).step()
        m.eval()
    for (name, _), a, b in zip(model.named_parameters(), *grads):
        assert torch.equal(a, b), name
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.inference_mode():
        torch.testing.assert_close(model(IDS).logits, reference(IDS).logits.detach(), rtol=0, atol=1e-5)


def test_cast_after_fusion_rebuilds_in_the_new_dtype(monkeypatch):
    monkeypatch.setitem(packed_weights._state, "enabled", False)  # bf16 single rows fuse only without packed copies
    model = _tiny()
    with torch.inference_mode():
        model(IDS)
    model.to(torch.bfloat16)
    attn = model.model.layers[1].self_attn
    expected = model(IDS).logits.detach()
    with torch.inference_mode():
        out = model(IDS).logits
    assert out.dtype == torch.bfloat16 and attn.o_proj.weight.is_contiguous()
    # half precision fuses single rows only (several rows run layer by layer, rounding as the plain path)
    assert attn.q_proj.weight.untyped_storage().data_ptr() != attn.v_proj.weight.untyped_storage().data_ptr()
    with torch.inference_mode():
        model(IDS[:1, :1])
    assert attn.q_proj.weight.untyped_storage().data_ptr() == attn.v_proj.weight.untyped_storage().data_ptr()
    torch.testing.assert_close(out.float(), expected.float(), rtol=0, atol=0.05)
    model.to(torch.float32)
    with torch.inference_mode():
        model(IDS)
    assert attn.q_proj.weight.dtype == torch.float32 and attn.q_proj.weight.is_contiguous()
    assert attn.q_proj.weight.untyped_storage().data_ptr() == attn.v_proj.weight.untyped_storage().data_ptr()


def test_dynamic_cache_grows_in_place_like_concatenation():
    gen = torch.Generator().manual_seed(0)
    cache, keys, values = DynamicCache(), [], []
    for step in (5, 1, 1, 3, 1):
        k, v = torch.randn(2, 3, step, 4, generator=gen), torch.randn(2, 3, step, 4, generator=gen)
        keys.append(k), values.append(v)
        got_k, got_v = cache.update(0, k, v)
        assert torch.equal(got_k, torch.cat(keys, -2)) and torch.equal(got_v, torch.cat(values, -2))
    assert cache.get_seq_length() == 11
    cache.crop(8)  # later positions are overwritten
    k, v = torch.randn(2, 3, 1, 4, generator=gen), torch.randn(2, 3, 1, 4, generator=gen)
    got_k, _ = cache.update(0, k, v)
    assert torch.equal(got_k, torch.cat([torch.cat(keys, -2)[..., :8, :], k], -2))
    cache.reorder_cache(torch.tensor([1, 0]))
    got_k, _ = cache.update(0, k, v)
    assert got_k.shape == (2, 3, 10, 4) and torch.equal(got_k[0, :, :8], torch.cat(keys, -2)[1, :, :8])


def test_model_made_under_inference_mode_fuses_too():
    reference = _tiny()
    with torch.inference_mode():
        model = _tiny()  # inference-tensor weights
        torch.testing.assert_close(model(IDS).logits, reference(IDS).logits, rtol=0, atol=1e-5)
    assert torch.equal(model.generate(IDS, max_new_tokens=3, do_sample=False),
                       reference.generate(IDS, max_new_tokens=3, do_sample=False))


def test_few_row_float32_products_split_across_threads_match_f_linear(monkeypatch):
    split = []
    row_blocks = fused._row_blocks
    monkeypatch.setattr(fused, "_row_blocks", lambda *args: split.append(args[3]) or row_blocks(*args))
    g = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            # 96 output rows split into as many blocks as threads, 100 into 2 at 3 threads, 97 into none;
            # 65 rows run F.linear
            for rows, out in ((1, 96), (5, 96), (64, 96), (65, 96), (1, 97), (4, 97), (1, 100), (3, 100)):
                x = torch.randn(rows, 40, generator=g)
                weight = torch.randn(out, 40, generator=g)
                bias = torch.randn(out, generator=g)
                split.clear()
                torch.testing.assert_close(fused.linear(x, weight), F.linear(x, weight), rtol=0, atol=1e-5)
                torch.testing.assert_close(fused.linear(x[None], weight, bias), F.linear(x, weight, bias)[None],
                                           rtol=0, atol=1e-5)
                blocks = {(96, 1): 1, (96, 2): 2, (96, 3): 3, (96, 4): 4, (100, 1): 1, (100, 2): 2, (100, 3): 2,
                          (100, 4): 4}.get((out, threads), 1)
                expected = [blocks] * 2 if blocks > 1 and rows <= fused.SPLIT_MAX_ROWS else []
                assert split == expected, (threads, rows, out)
                # a weight that is not row-major runs F.linear
                split.clear()
                strided = weight.t().contiguous().t()
                torch.testing.assert_close(fused.linear(x, strided), F.linear(x, weight), rtol=0, atol=1e-5)
                assert split == []
            assert fused.linear(torch.randn(3, 40), torch.randn(0, 40)).shape == (3, 0)  # no outputs: F.linear
    finally:
        torch.set_num_threads(before)


def test_one_thread_stores_float32_weights_transposed_and_two_threads_row_major():
    model, reference = _tiny(attention_bias=True), _tiny(attention_bias=True)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        expected = reference(IDS).logits
        torch.set_num_threads(1)
        got = model(IDS[:, :1]).logits, model(IDS).logits
        # one thread: the fused buffer and the tied head are stored [in, out], as the CPU GEMM reads a
        # row fastest on one thread; the values stay those of the plain layers
        assert transposed_layout(attn.q_proj.weight) and transposed_layout(attn.o_proj.weight)
        assert transposed_layout(model.lm_head.weight) and model.lm_head.weight is model.model.embed_tokens.weight
        assert attn.q_proj.weight.untyped_storage().data_ptr() == attn.v_proj.weight.untyped_storage().data_ptr()
        torch.testing.assert_close(got[1], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(got[0], expected[:, :1], rtol=0, atol=1e-5)
        torch.set_num_threads(2)
        again = model(IDS).logits
    assert attn.q_proj.weight.is_contiguous() and model.lm_head.weight.is_contiguous()
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-5)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)
