"""Inference projections (runtime/fused.py): grouped products give the plain path's values, float32
products of a few rows split across threads, and the weights' storage never changes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from openformers.models.llama import LlamaConfig, LlamaForCausalLM
from openformers.modules.cache import DynamicCache
from openformers.runtime import fused


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
    """The kernels depend on the thread count: every test starts at two threads and leaves the count as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _layouts(model: nn.Module) -> dict:
    return {k: (v.data_ptr(), v.stride(), v.is_contiguous()) for k, v in model.state_dict(keep_vars=True).items()}


def test_grouped_products_match_the_plain_path_and_leave_the_weights_alone():
    model = _tiny(attention_bias=True)
    expected = model(IDS).logits.detach()  # grad enabled: plain per-layer path
    before, storages = _layouts(model), _storages(model)
    with torch.inference_mode():
        torch.testing.assert_close(model(IDS).logits, expected, rtol=0, atol=1e-5)
        model(IDS[:, :1])
    assert _layouts(model) == before and _storages(model) == storages
    attn = model.model.layers[0].self_attn
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert attn.q_proj.weight.requires_grad and not attn.q_proj.weight.is_inference()  # still trainable
    # in-place updates are seen at the next call (a packed copy is remade from the new values)
    with torch.no_grad():
        attn.k_proj.weight.mul_(2.0)
    changed = model(IDS).logits.detach()
    assert not torch.allclose(changed, expected)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, changed, rtol=0, atol=1e-5)
        torch.testing.assert_close(model(IDS[:, :1]).logits, changed[:, :1], rtol=0, atol=1e-5)


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
    # a training step after inference computes the gradients of a model never run at inference, bitwise
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


def test_cast_after_inference_runs_in_the_new_dtype():
    model = _tiny()
    with torch.inference_mode():
        model(IDS)
    model.to(torch.bfloat16)
    expected = model(IDS).logits.detach()
    before = _layouts(model)
    with torch.inference_mode():
        out = model(IDS).logits
        model(IDS[:1, :1])
    assert out.dtype == torch.bfloat16 and _layouts(model) == before
    torch.testing.assert_close(out.float(), expected.float(), rtol=0, atol=0.05)
    model.to(torch.float32)
    with torch.inference_mode():
        out = model(IDS).logits
    assert out.dtype == torch.float32 and all(p.is_contiguous() for p in model.parameters())


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


def test_thread_count_changes_nothing_in_the_weights():
    model, reference = _tiny(attention_bias=True), _tiny(attention_bias=True)
    before = _layouts(model)
    with torch.no_grad():
        expected = reference(IDS).logits
        torch.set_num_threads(1)
        got = model(IDS[:, :1]).logits, model(IDS).logits
        assert _layouts(model) == before
        torch.testing.assert_close(got[1], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(got[0], expected[:, :1], rtol=0, atol=1e-5)
        torch.set_num_threads(2)
        again = model(IDS).logits
    assert _layouts(model) == before
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-5)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)
