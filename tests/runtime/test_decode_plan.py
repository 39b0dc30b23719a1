"""Inference calls of described decoders run on ``runtime/decode.py``'s plan (through ``runtime/decoder.py``):
decode steps on kept kernels give the bits of kernels resolved afresh, the module path's values to rounding
and its greedy tokens, and the plan gives way whenever it no longer describes the model."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

import openformers
from openformers.runtime import decode, decoder
from tests.models.llama_family import tiny_config


@pytest.fixture(autouse=True)
def _pytorch_operators(monkeypatch):
    # these tests are about the plan's PyTorch path; the one-call native step (batch 1, no masks) gives the
    # same values only to rounding and is tested in tests/quantization/test_int4_native.py
    monkeypatch.setattr(decode, "native_step", lambda *a: None)


def _model(prefix: str = "Llama", dtype: torch.dtype = torch.float32, **overrides):
    torch.manual_seed(0)
    config = getattr(openformers, f"{prefix}Config")(**tiny_config(**overrides))
    return getattr(openformers, f"{prefix}ForCausalLM")(config).to(dtype).eval()


def _mode(monkeypatch, mode: str) -> None:
    """"plan": the runtime as shipped; "fresh": every step resolves its kernels again (nothing kept);
    "module": the model's own forward (no runner)."""
    monkeypatch.setattr(decoder, "plan_for", (lambda m: None) if mode == "module" else decode.plan_for)
    if mode == "fresh":
        monkeypatch.setattr(decode.DecodePlan, "_resolve", lambda self, hidden, key: self.kernels_for(hidden))
    else:
        monkeypatch.setattr(decode.DecodePlan, "_resolve", _REAL_RESOLVE)


_REAL_RESOLVE = decode.DecodePlan._resolve


def _generate(model, ids, mask=None, *, plan: bool | str, monkeypatch, **kw):
    _mode(monkeypatch, {True: "plan", False: "fresh"}.get(plan, plan))
    try:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                             return_dict_in_generate=True, output_logits=True, **kw)
    finally:
        _mode(monkeypatch, "plan")
    return out.sequences, torch.stack(out.logits)


def _used(monkeypatch) -> list:
    built = []
    real = decode.plan_for

    def spy(*args):
        plan = real(*args)
        built.append(plan)
        return plan
    monkeypatch.setattr(decoder, "plan_for", spy)
    return built


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    tol = 1e-4 if a.dtype == torch.float32 else 3e-2
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


CASES = [
    ("Llama", torch.float32, 1, {}),
    ("Llama", torch.bfloat16, 1, {}),
    ("Llama", torch.float32, 3, {}),
    ("Llama", torch.bfloat16, 3, {}),
    ("Mistral", torch.float32, 2, {"sliding_window": 4}),  # the window is passed while decoding
    ("Qwen2", torch.bfloat16, 2, {}),  # q/k/v biases
    ("Qwen2", torch.float32, 1, {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}),
    ("Qwen3", torch.float32, 1, {}),  # per-head q/k norms: the qk_norm block
    ("Qwen3", torch.bfloat16, 3, {}),
    ("Gemma", torch.float32, 1, {"head_dim": 16}),  # offset norms, scaled embeddings, tanh-GELU
    ("Gemma", torch.bfloat16, 3, {"head_dim": 16}),
]


@pytest.mark.parametrize("prefix,dtype,batch,overrides", CASES)
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_plan_gives_the_module_path_bits(prefix, dtype, batch, overrides, cache, monkeypatch):
    model = _model(prefix, dtype, **overrides)
    ids = torch.randint(1, 128, (batch, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[1, :3] = 0  # a left-padded row: decode steps carry a mask
        ids[1, :3] = 0
    kw = {"cache_implementation": cache}
    seq_fresh, logits_fresh = _generate(model, ids, mask, plan=False, monkeypatch=monkeypatch, **kw)
    seq_module, logits_module = _generate(model, ids, mask, plan="module", monkeypatch=monkeypatch, **kw)
    decode._PLANS.pop(model.model, None)
    built = _used(monkeypatch)
    seq_plan, logits_plan = model.generate(ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                           return_dict_in_generate=True, output_logits=True, **kw)[:2]
    assert torch.equal(seq_plan, seq_fresh)
    assert torch.equal(torch.stack(logits_plan), logits_fresh)
    assert torch.equal(seq_plan, seq_module)
    _close(torch.stack(logits_plan), logits_module)
    # the prefill and every decode step run on the plan, made once and kept across steps
    assert len(built) == 12 and all(p is not None for p in built)
    assert len({id(p) for p in built}) == 1


def _step(model, ids):
    """Logits of one decode step after a prefill of ``ids``, and whether it ran through a plan."""
    with torch.no_grad():
        out = model(ids[:, :-1], use_cache=True)
        before = decode.plan_of(model.model)
        logits = model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True).logits
    return logits, decode.plan_of(model.model), before


def _reference(model, ids, monkeypatch):
    """The step's logits with kernels resolved afresh."""
    _mode(monkeypatch, "fresh")
    try:
        return _step(model, ids)[0]
    finally:
        _mode(monkeypatch, "plan")


IDS = torch.randint(1, 128, (1, 6), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_updated_in_place_makes_a_new_plan(dtype, monkeypatch):
    model = _model(dtype=dtype)
    _, first, _ = _step(model, IDS)
    assert first is not None
    with torch.no_grad():
        model.model.layers[1].self_attn.k_proj.weight.mul_(1.5)
        model.model.layers[0].mlp.down_proj.weight.add_(0.01)
    logits, second, before = _step(model, IDS)
    assert second is not first and before is second  # the prefill after the update made the new plan
    assert torch.equal(logits, _reference(model, IDS, monkeypatch))


def test_replaced_weight_and_dtype_change_are_seen(monkeypatch):
    model = _model()
    _step(model, IDS)
    layer = model.model.layers[0].mlp
    layer.gate_proj.weight = torch.nn.Parameter(torch.randn_like(layer.gate_proj.weight))
    logits, plan, _ = _step(model, IDS)
    assert torch.equal(logits, _reference(model, IDS, monkeypatch))
    model.to(torch.bfloat16)
    logits, plan, _ = _step(model, IDS)
    assert logits.dtype == torch.bfloat16 and plan is not None
    assert torch.equal(logits, _reference(model, IDS, monkeypatch))


def test_hooks_and_patched_forwards_take_the_module_path(monkeypatch):
    model = _model()
    _step(model, IDS)
    seen = []
    handle = model.model.layers[1].mlp.up_proj.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    logits, plan, _ = _step(model, IDS)
    assert plan is None and seen  # the hook ran on the decode step too
    handle.remove()
    global_handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, out: seen.append(1))
    try:
        count = len(seen)
        assert _step(model, IDS)[1] is None and len(seen) > count
    finally:
        global_handle.remove()
    attn = model.model.layers[0].self_attn
    calls = []
    original = attn.forward
    attn.forward = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    assert _step(model, IDS)[1] is None and calls
    del attn.forward
    assert _step(model, IDS)[1] is not None


def test_training_takes_the_module_path_and_lora_the_plan(monkeypatch):
    from openformers.peft import LoraConfig, get_peft_model

    model = _model()
    _step(model, IDS)
    model.model.layers[1].train()
    assert _step(model, IDS)[1] is None
    model.eval()
    with monkeypatch.context() as patch:
        patch.setattr(torch.compiler, "is_compiling", lambda: True)  # torch.compile traces the module path
        assert _step(model, IDS)[1] is None
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    logits, plan, _ = _step(peft.base_model.model, IDS)
    assert plan is not None  # LoRA runs on merged copies (tests/runtime/test_lora_plan.py)
    assert torch.equal(logits, _reference(peft.base_model.model, IDS, monkeypatch))
    merged = peft.merge_and_unload()
    logits, plan, _ = _step(merged, IDS)
    assert plan is not None
    assert torch.equal(logits, _reference(merged, IDS, monkeypatch))


def test_copies_start_without_the_plan():
    model = _model()
    _, plan, _ = _step(model, IDS)
    twin = copy.deepcopy(model)
    assert decode.plan_of(twin.model) is None
    restored = pickle.loads(pickle.dumps(model))
    assert decode.plan_of(restored.model) is None
    logits, twin_plan, _ = _step(twin, IDS)
    assert twin_plan is not None and twin_plan is not plan
    assert torch.equal(logits, _step(model, IDS)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_token_prompt_runs_through_the_plan_from_the_first_step(dtype, monkeypatch):
    model = _model(dtype=dtype)
    ids = torch.tensor([[5]])
    seq_module, logits_module = _generate(model, ids, plan=False, monkeypatch=monkeypatch)
    built = _used(monkeypatch)
    out = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, return_dict_in_generate=True,
                         output_logits=True)
    assert torch.equal(out.sequences, seq_module) and torch.equal(torch.stack(out.logits), logits_module)
    assert len(built) == 12 and all(p is not None for p in built)


def test_a_new_thread_count_resolves_the_kernels_again(monkeypatch):
    """The plan keys its kernels by the thread count (the row blocks follow it): a new count resolves them
    again and keeps the module path's bits."""
    model = _model()
    ids = torch.randint(1, 128, (1, 7), generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    try:
        for threads in (2, 1, 2):
            torch.set_num_threads(threads)
            seq_module, logits_module = _generate(model, ids, plan=False, monkeypatch=monkeypatch)
            seq_plan, logits_plan = _generate(model, ids, plan=True, monkeypatch=monkeypatch)
            assert torch.equal(seq_plan, seq_module) and torch.equal(logits_plan, logits_module)
            plan = decode.plan_of(model.model)
            assert (torch.float32, 1, threads) in plan.kernels
    finally:
        torch.set_num_threads(before)


def test_layers_the_runtime_does_not_know_run_as_modules_and_say_why(caplog):
    """A layer class that changes its forward without declaring its own blocks, or declares a block the runtime
    does not run, takes the module path (the same logits as forward) and one debug line says why."""
    import logging

    from openformers.models.llama.model import LlamaDecoderLayer
    from openformers.modules.blocks import DecoderBlocks

    class Doubled(LlamaDecoderLayer):
        def forward(self, hidden_states, *args, **kwargs):
            out, weights = super().forward(hidden_states, *args, **kwargs)
            return out * 2, weights

    class Offset(LlamaDecoderLayer):  # Gemma-style norms declared, plain RMSNorm modules
        blocks = DecoderBlocks(norm_offset=1.0)

    class Scaled(LlamaDecoderLayer):  # embeddings times 8 declared, a stack that does not scale them
        blocks = DecoderBlocks(embedding_scale=8.0)

    class Plain(LlamaDecoderLayer):  # a plain MLP declared, a gated one built
        blocks = DecoderBlocks(mlp="plain")

    class Layer(LlamaDecoderLayer):  # LayerNorms declared, RMSNorms built
        blocks = DecoderBlocks(norm="layer")

    class Alibi(LlamaDecoderLayer):  # a block the runtime does not run
        blocks = DecoderBlocks(attention="alibi")

    for cls, why in ((Doubled, "changes its forward"), (Offset, "norms are not the OffsetRMSNorms (offset 1.0)"),
                     (Scaled, "scale the embeddings by 8.0, the stack by None"),
                     (Plain, "mlp is a GatedMLP, not the plain MLP its blocks name"),
                     (Layer, "norms are not the LayerNorms its blocks name"),
                     (Alibi, "attention='alibi' (the runtime runs 'rotary')")):
        model = _model()
        model.model.layers[1].__class__ = cls
        decode._LOGGED.clear()
        with caplog.at_level(logging.DEBUG, logger="openformers.runtime.decode"):
            logits, plan, _ = _step(model, IDS)
        assert plan is None
        assert sum(why in r.getMessage() for r in caplog.records) == 1, caplog.text
        with torch.no_grad():
            cache = model(IDS[:, :-1], use_cache=True).past_key_values
            expect = model.forward(IDS[:, -1:], past_key_values=cache, use_cache=True).logits
        assert torch.equal(logits, expect)
        caplog.clear()
