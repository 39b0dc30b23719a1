"""LoRA-wrapped projections at inference run on the decode plan over merged copies the runtime keeps
(``runtime/adapters.py``): greedy tokens of the module path, logits to float32 rounding, the copies remade
after an optimizer step, the base model's tokens under ``disable_adapter()``, no parameter touched, and a
debug line for the adapters the runtime leaves to the module path."""
from __future__ import annotations

import copy
import logging

import pytest
import torch

import openformers
from openformers.peft import LoraConfig, get_peft_model
from openformers.runtime import adapters, decode, decoder
from tests.models.llama_family import tiny_config

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _base(prefix: str = "Llama", **overrides):
    torch.manual_seed(0)
    config = getattr(openformers, f"{prefix}Config")(**tiny_config(**overrides))
    return getattr(openformers, f"{prefix}ForCausalLM")(config).eval()


def _peft(base, targets=ALL, **kw):
    # init_lora_weights=False: B is random too, so every adapter changes the outputs
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, **kw)
    return get_peft_model(base, config).eval()


def _ids(batch: int):
    ids = torch.randint(1, 128, (batch, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[1, :3] = 0  # a left-padded row: decode steps carry a mask
        ids[1, :3] = 0
    return ids, mask


def _generate(model, ids, mask, *, module: bool = False):
    """(sequences, stacked logits, plans the calls got); ``module``: the model's own forward (no runner)."""
    plans = []
    real = decode.plan_for

    def spy(m):
        plan = None if module else real(m)
        plans.append(plan)
        return plan
    original = decoder.plan_for
    decoder.plan_for = spy
    try:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                             return_dict_in_generate=True, output_logits=True)
    finally:
        decoder.plan_for = original
    return out.sequences, torch.stack(out.logits), plans


def _agree(model, ids, mask):
    """Generate on the plan and on the module path: the same tokens, logits within float32 rounding; every call
    ran on a plan. Returns the plan's (sequences, logits)."""
    seq_module, logits_module, _ = _generate(model, ids, mask, module=True)
    seq, logits, plans = _generate(model, ids, mask)
    assert plans and all(p is not None for p in plans)
    assert torch.equal(seq, seq_module)
    torch.testing.assert_close(logits, logits_module, atol=1e-5, rtol=1e-5)
    return seq, logits


def _snapshot(model):
    return {n: (p.data_ptr(), p.stride(), p._version, p.detach().clone()) for n, p in model.named_parameters()}


def _unchanged(model, before):
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for n, (ptr, stride, version, values) in before.items():
        p = after[n]
        assert (p.data_ptr(), p.stride(), p._version) == (ptr, stride, version), n
        assert torch.equal(p.detach(), values), n


PLAIN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]


# Qwen2: q/k/v biases; Qwen3: per-head q/k norms; Starcoder2: LayerNorms, a plain MLP c_proj(act(c_fc(x))), biases
@pytest.mark.parametrize("prefix,targets,checked", [
    ("Llama", ALL, ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")),
    ("Qwen2", ALL, ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")),
    ("Qwen3", ALL, ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")),
    ("Starcoder2", PLAIN_MLP, ("self_attn.q_proj", "mlp.c_fc", "mlp.c_proj")),
], ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("batch", [1, 3])  # 1: the native one-call step where it builds; 3: a padded row
def test_lora_generate_runs_on_the_plan_with_the_module_path_tokens(prefix, targets, checked, batch):
    peft = _peft(_base(prefix), targets=targets)
    stack = peft.base_model.model.model
    ids, mask = _ids(batch)
    before = _snapshot(peft)
    _agree(peft, ids, mask)
    _unchanged(peft, before)
    plan = decode.plan_of(stack)
    layer = stack.layers[0]
    # the plan runs stand-ins over merged copies, never the model's own modules or parameters
    for proj in map(layer.get_submodule, checked):
        held = adapters.merged_of(proj)
        assert held is not None and any(held is m for m in plan.layers[0])
        expect = proj.base_layer.weight + proj.get_delta_weight("default")
        torch.testing.assert_close(held.weight, expect, atol=1e-6, rtol=0)
        assert held.weight.data_ptr() != proj.base_layer.weight.data_ptr()
        assert held.bias is proj.base_layer.bias
    # the adapter does change the tokens or logits: the plan is not running the base model
    with peft.disable_adapter():
        _, base_logits, _ = _generate(peft, ids, mask)
    assert not torch.allclose(base_logits, _generate(peft, ids, mask)[1], atol=1e-3)


def test_an_optimizer_step_on_the_adapter_is_seen_by_the_next_generate():
    peft = _peft(_base())
    stack = peft.base_model.model.model
    ids, mask = _ids(3)
    _, logits_before = _agree(peft, ids, mask)
    first = decode.plan_of(stack)
    q = stack.layers[1].self_attn.q_proj
    held = adapters.merged_of(q)
    a_ptr = q.lora_A["default"].weight.data_ptr()
    params = [p for p in peft.parameters() if p.requires_grad]
    assert params and all("lora_" in n for n, p in peft.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(params, lr=0.05)
    peft.train()
    peft(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    opt.step()  # updates lora_A / lora_B in place (the same tensors, new versions)
    peft.eval()
    assert q.lora_A["default"].weight.data_ptr() == a_ptr
    _, logits_after = _agree(peft, ids, mask)
    assert not torch.allclose(logits_after, logits_before, atol=1e-3)
    assert decode.plan_of(stack) is not first and adapters.merged_of(q) is not held
    torch.testing.assert_close(adapters.merged_of(q).weight, q.base_layer.weight + q.get_delta_weight("default"),
                               atol=1e-6, rtol=0)
    # a scaling changed by hand is seen too
    for m in peft.modules():
        if hasattr(m, "lora_A") and "default" in getattr(m, "scaling", {}):
            m.scaling["default"] *= 0.5
    _, logits_scaled = _agree(peft, ids, mask)
    assert not torch.allclose(logits_scaled, logits_after, atol=1e-3)


def test_disable_adapter_gives_the_base_model_tokens():
    base = _base()
    reference = copy.deepcopy(base)
    peft = _peft(base)
    ids, mask = _ids(3)
    seq_base, logits_base, _ = _generate(reference, ids, mask)
    with peft.disable_adapter():
        seq, logits = _agree(peft, ids, mask)
        plan = decode.plan_of(peft.base_model.model.model)
    assert torch.equal(seq, seq_base) and torch.equal(logits, logits_base)
    q = peft.base_model.model.model.layers[0].self_attn.q_proj
    assert plan.layers[0][2] is q.base_layer  # no copy: the base layer itself
    # enabled again: the adapter's tokens, on a new plan
    _agree(peft, ids, mask)
    assert decode.plan_of(peft.base_model.model.model) is not plan


def test_several_adapters_and_a_merged_one():
    peft = _peft(_base())
    peft.add_adapter("second", LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "up_proj"],
                                          init_lora_weights=False))
    peft.eval()  # the new adapter's modules are made in training mode, which the plan leaves to the module path
    ids, mask = _ids(3)
    before = _snapshot(peft)
    peft.base_model.set_adapter(["default", "second"])
    seq_both, logits_both = _agree(peft, ids, mask)
    q = peft.base_model.model.model.layers[0].self_attn.q_proj
    expect = q.base_layer.weight + q.get_delta_weight("default") + q.get_delta_weight("second")
    torch.testing.assert_close(adapters.merged_of(q).weight, expect, atol=1e-6, rtol=0)
    _unchanged(peft, before)
    peft.base_model.set_adapter("second")
    _, logits_second = _agree(peft, ids, mask)
    assert not torch.allclose(logits_second, logits_both, atol=1e-3)
    # "second" merged into the base weights, "default" active beside it: the copy adds "default" alone
    peft.base_model.set_adapter(["default", "second"])
    for m in peft.modules():
        if hasattr(m, "lora_A") and "second" in m.lora_A:
            m.merge(adapter_names=["second"])
    _, logits_merged = _agree(peft, ids, mask)
    torch.testing.assert_close(logits_merged, logits_both, atol=1e-4, rtol=1e-4)


def _why(caplog, peft, ids, mask, text):
    decode._LOGGED.clear()
    with caplog.at_level(logging.DEBUG, logger="openformers.runtime.decode"):
        seq, logits, plans = _generate(peft, ids, mask)
    assert plans and all(p is None for p in plans)
    assert sum(text in r.getMessage() for r in caplog.records) == 1, caplog.text
    seq_module, logits_module, _ = _generate(peft, ids, mask, module=True)
    assert torch.equal(seq, seq_module) and torch.equal(logits, logits_module)
    caplog.clear()


def test_variants_the_runtime_does_not_merge_run_as_modules_and_say_why(caplog, monkeypatch):
    from openformers.peft import LoHaConfig

    ids, mask = _ids(3)
    _why(caplog, _peft(_base(), use_dora=True), ids, mask, "DoRA adapter")
    loha = get_peft_model(_base(), LoHaConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    _why(caplog, loha, ids, mask, "is a LoHaLinear")
    monkeypatch.setitem(adapters.__dict__, "budgeted_copy", lambda make, nbytes: None)
    _why(caplog, _peft(_base()), ids, mask, "no room in the packed-weight budget")


def test_a_hook_on_an_adapter_module_takes_the_module_path():
    peft = _peft(_base())
    ids, mask = _ids(1)
    _agree(peft, ids, mask)
    seen = []
    lora_a = peft.base_model.model.model.layers[1].mlp.down_proj.lora_A["default"]
    handle = lora_a.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    try:
        _, _, plans = _generate(peft, ids, mask)
        assert all(p is None for p in plans) and seen
    finally:
        handle.remove()
    _, _, plans = _generate(peft, ids, mask)
    assert all(p is not None for p in plans)


def _q(peft):
    return peft.base_model.model.model.layers[1].self_attn.q_proj


def _replace_lora_a(peft):
    q = _q(peft)
    old = q.lora_A["default"]
    new = torch.nn.Linear(old.in_features, old.out_features, bias=False).eval()
    q.lora_A["default"] = new


def _assign_data(peft):
    b = _q(peft).lora_B["default"].weight
    b.data = torch.randn_like(b)  # the same Parameter, a new storage (its version counter may stay)


def _replace_base(peft):
    q = _q(peft)
    base = copy.deepcopy(q.base_layer)
    with torch.no_grad():
        base.weight.mul_(1.5)
    q.base_layer = base


def _add_base_bias(peft):
    q = _q(peft)
    q.base_layer.bias = torch.nn.Parameter(torch.randn(q.base_layer.out_features))


def _replace_layer(peft):
    layers = peft.base_model.model.model.layers
    layer = copy.deepcopy(layers[1])
    with torch.no_grad():
        layer.mlp.down_proj.base_layer.weight.mul_(0.5)
    layers[1] = layer


def _norm_in_place(peft):
    with torch.no_grad():
        peft.base_model.model.model.layers[0].post_attention_layernorm.weight.add_(0.25)


def _replace_norm_weight(peft):
    norm = peft.base_model.model.model.layers[1].input_layernorm
    norm.weight = torch.nn.Parameter(norm.weight.detach() * 3.0)  # the native step read the old pointer


def _new_buffer(peft):
    peft.base_model.model.model.layers[0].input_layernorm.register_buffer("extra", torch.zeros(1))


def _active_list_in_place(peft):
    _q(peft).active_adapters.clear()  # the list itself, no set_adapter


def _merged_list_in_place(peft):
    q = _q(peft)
    q.merge()  # merges into the base weight and appends to merged_adapters


# changes a step's validity check must see (the plan is remade and gives the module path's tokens)
CHANGES = [_replace_lora_a, _assign_data, _replace_base, _add_base_bias, _replace_layer, _norm_in_place,
           _replace_norm_weight, _new_buffer, _active_list_in_place, _merged_list_in_place]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_every_change_to_what_the_plan_reads_is_seen(change):
    peft = _peft(_base())
    stack = peft.base_model.model.model
    ids, mask = _ids(1)
    _agree(peft, ids, mask)
    plan = decode.plan_of(stack)
    assert plan is not None and plan.valid(stack)
    change(peft)
    assert not plan.valid(stack)
    # the next generate (on a new plan, or on the module path where none can be made: a bias on q alone) gives
    # the module path's tokens and logits
    seq_module, logits_module, _ = _generate(peft, ids, mask, module=True)
    seq, logits, plans = _generate(peft, ids, mask)
    assert plans and all(p is not plan for p in plans)
    # a new plan for every call, but where none can be made (the bias on q alone): then the module path every time
    assert all((p is None) == (change is _add_base_bias) for p in plans), plans
    assert torch.equal(seq, seq_module)
    torch.testing.assert_close(logits, logits_module, atol=1e-5, rtol=1e-5)


def _dropout_training(peft):
    _q(peft).lora_dropout["default"].train()


def _patched_forward(peft):
    b = _q(peft).lora_B["default"]
    b.forward = lambda x: torch.nn.functional.linear(x, b.weight) * 2


@pytest.mark.parametrize("change", [_dropout_training, _patched_forward], ids=lambda f: f.__name__.strip("_"))
def test_an_adapter_module_not_running_as_itself_takes_the_module_path(change):
    peft = _peft(_base())
    stack = peft.base_model.model.model
    ids, mask = _ids(1)
    _agree(peft, ids, mask)
    plan = decode.plan_of(stack)
    change(peft)
    assert not plan.valid(stack)
    _, _, plans = _generate(peft, ids, mask)
    assert plans and all(p is None for p in plans)
