"""Checks of the native decode step shared by the family tests (Gemma, Qwen2, Starcoder2, ...): one step on the
native kernel against the plan's PyTorch layers and the module path, greedy tokens, and the slot cache's per-row
step. A family test builds its model and calls these; it does not copy them."""
from __future__ import annotations

import logging

import pytest
import torch

from openformers.modules.cache import DynamicCache
from openformers.runtime import decode, int4_native

_REAL_STEP = decode.native_step


@pytest.fixture
def two_threads():
    """Two torch threads for the test, as the decode benchmarks run."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def skip_without_kernel() -> None:
    if int4_native.library() is None or not int4_native.fast():
        pytest.skip("the native kernel is not built or not used on this CPU")


def pick(model, native_on: bool, monkeypatch) -> None:
    """Decode steps from now on: the native step (where it applies) or the plan's PyTorch layers."""
    monkeypatch.setattr(decode, "native_step", _REAL_STEP if native_on else (lambda *a: None))
    plan = decode.plan_of(model.model)
    if plan is not None:
        plan.native.clear()  # a kept native step would otherwise run either way


def native_used(model) -> bool:
    plan = decode.plan_of(model.model)
    return plan is not None and any(step is not None for step in plan.native.values())


def step(model, ids, native_on: bool, monkeypatch) -> tuple[torch.Tensor, bool]:
    """Logits of one decode step on the last token of ``ids`` after a prefill of the others, and whether the
    native step ran."""
    pick(model, native_on, monkeypatch)
    cache = DynamicCache()
    with torch.inference_mode():
        model(ids[:, :-1], past_key_values=cache, use_cache=True)  # the prefill never takes a decode path
        logits = model(ids[:, -1:], past_key_values=cache, use_cache=True).logits[0, -1].float()
    return logits, native_used(model)


def module_step(model, ids) -> torch.Tensor:
    """The same step's logits on the module path (autograd recording: no runtime)."""
    with torch.enable_grad():
        out = model(ids[:, :-1], use_cache=True)
        return model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True).logits[0, -1].float().detach()


def assert_native_step_agrees(model, ids, atol: float, monkeypatch, caplog) -> None:
    """The native step runs for ``model`` (no debug line says why not), its logits equal the plan's PyTorch
    layers' and the module path's within ``atol`` of the largest, and greedy tokens equal the module path's."""
    with caplog.at_level(logging.DEBUG, logger="openformers.runtime"):
        got, used = step(model, ids, True, monkeypatch)
    assert decode.plan_of(model.model) is not None, caplog.text
    assert "the module path runs" not in caplog.text and "native decode step not used" not in caplog.text
    assert used, "the native step did not run"
    expect, used = step(model, ids, False, monkeypatch)
    assert not used
    torch.testing.assert_close(got, expect, rtol=0, atol=atol * expect.abs().max().item())
    module = module_step(model, ids)
    torch.testing.assert_close(got, module, rtol=0, atol=max(atol, 1e-4) * module.abs().max().item())
    pick(model, True, monkeypatch)
    with torch.inference_mode():
        fast = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert native_used(model)
    with torch.enable_grad():
        slow = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert torch.equal(fast, slow), (fast.tolist(), slow.tolist())


def assert_update_is_seen(model, ids, params: list[torch.nn.Parameter], monkeypatch) -> None:
    """An optimizer step on ``params`` (in place) is seen by the next decode step: a new plan, the native step
    again, and the logits the PyTorch layers give for the updated weights."""
    before, used = step(model, ids, True, monkeypatch)
    assert used
    opt = torch.optim.SGD(params, lr=1.0)
    for p in params:
        p.grad = torch.full_like(p, -0.7)
    opt.step()
    plan = decode.plan_of(model.model)
    cache = DynamicCache()  # the next steps as a user runs them: nothing cleared by hand
    with torch.inference_mode():
        model(ids[:, :-1], past_key_values=cache, use_cache=True)
        after = model(ids[:, -1:], past_key_values=cache, use_cache=True).logits[0, -1].float()
    assert decode.plan_of(model.model) is not plan and native_used(model)
    expect, _ = step(model, ids, False, monkeypatch)
    assert (after - before).abs().max() > 1e-2  # the update changes the logits ...
    torch.testing.assert_close(after, expect, rtol=0, atol=1e-5 * expect.abs().max().item())  # ... as the layers say


def assert_rows_step_matches(model, vocab: int, monkeypatch) -> None:
    """``of_llama_step_rows`` (the serving engine's slot cache): two sequences of different lengths in rows of
    fixed buffers give each sequence's own module-path logits (a float32 model)."""
    stack, cfg = model.model, model.config
    lengths, cap = [5, 9], 16
    g = torch.Generator().manual_seed(7)
    seqs = [torch.randint(3, vocab, (1, n + 1), generator=g) for n in lengths]
    buffers = [(torch.zeros(2, cfg.num_key_value_heads, cap, cfg.head_dim),
                torch.zeros(2, cfg.num_key_value_heads, cap, cfg.head_dim)) for _ in range(cfg.num_hidden_layers)]
    expect = []
    for row, (n, ids) in enumerate(zip(lengths, seqs)):
        with torch.enable_grad():  # the module path
            out = model(ids[:, :n], use_cache=True)
            expect.append(model(ids[:, n:], past_key_values=out.past_key_values, use_cache=True).logits[0, -1].detach())
        for layer, (k, v) in enumerate(buffers):
            k[row, :, :n] = out.past_key_values.keys[layer][0, :, :n].detach()
            v[row, :, :n] = out.past_key_values.values[layer][0, :, :n].detach()
    pick(model, True, monkeypatch)
    with torch.inference_mode():
        model(seqs[0][:, :3])  # builds the plan
        plan = decode.plan_of(stack)
        nxt = torch.cat([ids[:, -1:] for ids in seqs])
        hidden, _, _, cos, sin = stack.layer_inputs(nxt, None, torch.tensor([[n] for n in lengths]), None, None, False)
        key = (hidden.dtype, hidden.shape[0], torch.get_num_threads())
        found = plan._native(key, plan._resolve(hidden, key), hidden, cos)
        assert found is not None
        got = found.rows(hidden, cos, sin, buffers, torch.tensor([0, 1]), torch.tensor(lengths))
        assert got is not None
        logits = model.lm_head(stack.norm(got))[:, -1]
    for row in range(2):
        torch.testing.assert_close(logits[row], expect[row], rtol=0, atol=1e-4 * expect[row].abs().max().item())
