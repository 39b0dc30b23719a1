"""Float32 training products through oneDNN (modules/dense.py): the values and gradients of
``F.linear``, taken only where they are the same computation, and used by models (the ``Linear``
block, GPT-2's ``Conv1D``) and LoRA."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from openformers.models.llama import LlamaConfig, LlamaForCausalLM
from openformers.core import native
from openformers.modules import dense
from openformers.modules.conv1d import Conv1D
from openformers.modules.dense import Linear, is_plain_linear, train_linear

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not dense._state["available"], reason="oneDNN linear not available in this build")


@pytest.fixture(autouse=True)
def _onednn_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oneDNN path, on CPUs where the default is the BLAS (MKL on Intel's) too."""
    monkeypatch.setitem(dense._state, "enabled", True)


class Count:
    """Counts the oneDNN products (``dense._product``) made while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        product = dense._product

        def counted(*args):
            self.calls += 1
            return product(*args)

        monkeypatch.setattr(dense, "_product", counted)


def _inputs(transposed: bool, bias: bool):
    torch.manual_seed(0)
    w = torch.randn(96, 80)
    if transposed:  # a weight stored [in, out] (a transposed view of a contiguous buffer)
        w = w.t().contiguous().t()
    return (torch.randn(3, 70, 80, requires_grad=True), w.requires_grad_(True),
            torch.randn(96, requires_grad=True) if bias else None)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_are_those_of_f_linear(transposed: bool, bias: bool, monkeypatch) -> None:
    x, w, b = _inputs(transposed, bias)
    wanted = [t for t in (x, w, b) if t is not None]
    count = Count(monkeypatch)
    y = train_linear(x, w, b)
    grad = torch.randn_like(y)
    grads = torch.autograd.grad(y, wanted, grad)
    assert count.calls == 2  # the forward product and the input gradient
    ref = F.linear(x, w, b)
    ref_grads = torch.autograd.grad(ref, wanted, grad)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_frozen_layer_input_without_grad_runs_the_product_alone(monkeypatch) -> None:
    x, w, _ = _inputs(False, False)
    count = Count(monkeypatch)
    y = train_linear(x.detach(), w.detach())
    assert count.calls == 1 and y.grad_fn is None
    torch.testing.assert_close(y, F.linear(x, w), atol=1e-5, rtol=1e-5)


def test_second_derivative(monkeypatch) -> None:
    x, w, b = _inputs(False, True)
    (gx,) = torch.autograd.grad(train_linear(x, w, b).square().sum(), x, create_graph=True)
    (gw,) = torch.autograd.grad(gx.sum(), w)
    x2, w2, b2 = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    (rx,) = torch.autograd.grad(F.linear(x2, w2, b2).square().sum(), x2, create_graph=True)
    (rw,) = torch.autograd.grad(rx.sum(), w2)
    torch.testing.assert_close(gw, rw, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("case", ["no_grad", "bfloat16", "autocast", "disabled", "sliced_weight", "zero3", "subclass"])
def test_other_cases_are_f_linear(case: str, monkeypatch) -> None:
    x, w, b = _inputs(False, True)
    count = Count(monkeypatch)
    if case == "no_grad":
        with torch.no_grad():
            y = train_linear(x, w, b)
    elif case == "bfloat16":
        y = train_linear(x.bfloat16(), w.bfloat16(), b.bfloat16())
    elif case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = train_linear(x, w, b)
        assert y.dtype == torch.bfloat16
    elif case == "sliced_weight":  # a slice of a wider buffer (fused at inference): oneDNN's slow path
        buf = torch.zeros(w.shape[1], w.shape[0] + 32)
        buf[:, : w.shape[0]] = w.detach().t()
        y = train_linear(x, buf[:, : w.shape[0]].t(), b)
    elif case == "zero3":  # a parameter DeepSpeed ZeRO-3 partitions: its own F.linear handles it
        p = torch.nn.Parameter(w.detach().clone())
        p.ds_id = 0
        y = train_linear(x, p, b)
        assert count.calls == 0
        train_linear(x, torch.nn.Parameter(w.detach().t().contiguous()).t(), b)  # a view, no ds_id: oneDNN
        assert count.calls == 1
        count.calls = 0
        q = torch.nn.Parameter(w.detach().t().contiguous())
        q.ds_id = 1
        y = train_linear(x, q.t(), b)  # a view of a partitioned parameter (Conv1D's weight.t())
    elif case == "subclass":  # a tensor subclass (DTensor, ...) keeps its own dispatch
        class Tagged(torch.Tensor):
            pass
        y = train_linear(x, w.detach().as_subclass(Tagged).requires_grad_(True), b)
        y = y.as_subclass(torch.Tensor)
    else:
        monkeypatch.setitem(dense._state, "enabled", False)
        y = train_linear(x, w, b)
    assert count.calls == 0
    torch.testing.assert_close(y.float(), F.linear(x, w, b).float(), atol=0.2, rtol=0.02)


def test_switch_reads_the_environment(monkeypatch) -> None:
    for value, on in [("0", False), ("off", False), ("False", False), ("1", True), ("on", True), ("", None)]:
        monkeypatch.setenv("OPENFORMERS_ONEDNN_LINEAR", value)
        assert dense._choice_from_env() is on
    monkeypatch.delenv("OPENFORMERS_ONEDNN_LINEAR")
    assert dense._choice_from_env() is None


def test_the_default_follows_the_cpu_and_the_blas() -> None:
    assert dense.prefers_onednn("AuthenticAMD", blas_is_mkl=True)  # MKL on AMD: oneDNN is faster
    assert not dense.prefers_onednn("GenuineIntel", blas_is_mkl=True)  # MKL on Intel: MKL is faster
    assert dense.prefers_onednn("GenuineIntel", blas_is_mkl=False)
    assert dense.prefers_onednn("", blas_is_mkl=False)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        assert (native.cpu_vendor() != "") == ("vendor_id" in cpuinfo.read_text())


def test_lora_training_steps_use_it(monkeypatch) -> None:
    """A LoRA layer's frozen base product, its input gradient and the adapter's A run through it."""
    from openformers.peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    ids = torch.randint(0, 96, (2, 9))
    lora = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                            task_type="CAUSAL_LM")).train()
    count = Count(monkeypatch)
    lora(ids, labels=ids).loss.backward()
    # 2 adapted projections a layer: the base product and its input gradient, the adapter's A product
    assert count.calls >= 2 * 2 * 2


# --- the Linear block of the model files ---------------------------------------------------------

def test_linear_is_nn_linear_with_its_parameters_init_and_state_dict() -> None:
    torch.manual_seed(3)
    ref = torch.nn.Linear(40, 24)
    torch.manual_seed(3)
    block = Linear(40, 24)
    assert isinstance(block, torch.nn.Linear) and is_plain_linear(block) and is_plain_linear(ref)
    assert list(block.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    assert all(torch.equal(a, b) for a, b in zip(block.state_dict().values(), ref.state_dict().values()))
    assert repr(block) == repr(ref)
    assert list(Linear(4, 3, bias=False).state_dict()) == ["weight"] and Linear(4, 3, bias=False).bias is None
    assert not is_plain_linear(type("Sub", (Linear,), {})(4, 3))  # a subclass may have its own forward


def _pair(bias: bool, seed: int = 0) -> tuple[torch.nn.Linear, Linear]:
    torch.manual_seed(seed)
    ref = torch.nn.Linear(80, 96, bias=bias)
    block = Linear(80, 96, bias=bias)
    block.load_state_dict(ref.state_dict())
    return ref, block


def _inputs_of(shape: str) -> torch.Tensor:
    torch.manual_seed(1)
    if shape == "2d":
        return torch.randn(70, 80)
    if shape == "3d":
        return torch.randn(3, 70, 80)
    if shape == "transposed":  # [3, 70, 80] as a transposed view of a [3, 80, 70] buffer
        return torch.randn(3, 80, 70).transpose(1, 2)
    return torch.randn(3, 70, 160)[..., ::2]  # every other feature: strided in the last dimension


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", ["2d", "3d", "transposed", "strided"])
def test_linear_forward_and_gradients_are_f_linear(bias: bool, shape: str, monkeypatch) -> None:
    ref, block = _pair(bias)
    x = _inputs_of(shape)
    x_ref, x_block = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    if shape != "2d":  # keep the layout of the input as it is
        x_ref, x_block = (x.detach().requires_grad_(True) for _ in range(2))
    count = Count(monkeypatch)
    y = block(x_block)
    grad = torch.randn_like(y)
    y.backward(grad)
    assert count.calls == 2  # the forward product and the input gradient
    y_ref = ref(x_ref)
    y_ref.backward(grad)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_block.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    for p, q in zip(block.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-5)
        assert p.grad.stride() == q.grad.stride()


def test_linear_double_backward_falls_back_to_differentiable_products(monkeypatch) -> None:
    ref, block = _pair(True)
    x = _inputs_of("3d")
    results = []
    for module in (block, ref):
        xi = x.clone().requires_grad_(True)
        count = Count(monkeypatch)
        (gx,) = torch.autograd.grad(module(xi).square().sum(), xi, create_graph=True)
        calls = count.calls
        gx.square().sum().backward()  # through the input gradient: second derivative in the weight
        results.append((gx.detach(), module.weight.grad.clone(), calls))
    (gx, gw, calls), (rx, rw, ref_calls) = results
    assert calls == 1 and ref_calls == 0  # the forward on oneDNN, the input gradient a plain product
    torch.testing.assert_close(gx, rx, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-3, rtol=1e-5)


def test_linear_off_is_f_linear_bit_for_bit(monkeypatch) -> None:
    monkeypatch.setitem(dense._state, "enabled", False)
    ref, block = _pair(True)
    x = _inputs_of("3d")
    outs = []
    for module in (block, ref):
        module.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        y.backward(torch.ones_like(y))
        outs.append((y, xi.grad, module.weight.grad, module.bias.grad))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_environment_zero_turns_the_block_into_f_linear(tmp_path) -> None:
    """``OPENFORMERS_ONEDNN_LINEAR=0`` read at import: the block gives ``F.linear``'s bits, gradients included."""
    import os
    import subprocess
    import sys

    code = (
        "import torch, torch.nn.functional as F\n"
        "from openformers.modules import dense\n"
        "assert not dense._state['enabled']\n"
        "torch.manual_seed(0)\n"
        "m = dense.Linear(80, 96)\n"
        "x = torch.randn(3, 70, 80, requires_grad=True)\n"
        "y = m(x); y.backward(torch.ones_like(y))\n"
        "g = [x.grad, m.weight.grad, m.bias.grad]\n"
        "x2, w, b = (t.detach().clone().requires_grad_(True) for t in (x, m.weight, m.bias))\n"
        "y2 = F.linear(x2, w, b); y2.backward(torch.ones_like(y2))\n"
        "assert torch.equal(y, y2) and all(torch.equal(a, c) for a, c in zip(g, [x2.grad, w.grad, b.grad]))\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OPENFORMERS_ONEDNN_LINEAR": "0", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("bias", [False, True])
def test_conv1d_forward_and_gradients_are_addmm(bias: bool, monkeypatch) -> None:
    torch.manual_seed(0)
    layer = Conv1D(96, 80)
    with torch.no_grad():
        layer.bias.normal_()
    if not bias:
        layer.bias.requires_grad_(False)
    x = torch.randn(3, 70, 80)
    xi, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    w, b = (t.detach().clone().requires_grad_(True) for t in (layer.weight, layer.bias))
    count = Count(monkeypatch)
    y = layer(xi)
    grad = torch.randn_like(y)
    y.backward(grad)
    assert count.calls == 2
    ref = torch.addmm(b, xr.reshape(-1, 80), w).view(3, 70, 96)
    ref.backward(grad)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xi.grad, xr.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.weight.grad, w.grad, atol=1e-4, rtol=1e-5)
    assert layer.weight.grad.is_contiguous()  # the gradient in the parameter's own [in, out] layout
    if bias:
        torch.testing.assert_close(layer.bias.grad, b.grad, atol=1e-4, rtol=1e-5)
    else:
        assert layer.bias.grad is None


def test_graph_captures_get_f_linear(monkeypatch) -> None:
    """``torch.export`` (what ONNX and Core ML export run), ``torch.jit.trace`` and ``torch.func`` see ``F.linear``,
    autograd on and parameters trainable."""
    count = Count(monkeypatch)
    model = torch.nn.Sequential(Linear(8, 16), torch.nn.ReLU(), Linear(16, 4))
    x = torch.randn(3, 8)
    program = torch.export.export(model, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.linear.default" in targets and not any("mkldnn" in t for t in targets)
    torch.jit.trace(model, (x,))
    params = dict(model.named_parameters())
    torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).sum())(params)
    assert count.calls == 0
    model(x)  # eager, recorded: oneDNN
    assert count.calls == 2


def _tiny_models():
    from openformers.models.bert import BertConfig, BertForSequenceClassification
    from openformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=64, n_layer=2, n_head=4, n_positions=64))
    bert = BertForSequenceClassification(BertConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=128,
                                                    max_position_embeddings=64, num_labels=3))
    return {"llama": (llama, 2 * 7 + 1), "gpt2": (gpt2, 2 * 4 + 1), "bert": (bert, 2 * 6 + 2)}


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_full_fine_tune_steps_of_the_families_use_it(family: str, monkeypatch) -> None:
    """Every linear product of a full fine-tune step (projections, MLP, heads) goes through oneDNN, and the
    gradients are as close to float64's as those of the same step with the block off (``F.linear``)."""
    import copy

    torch.manual_seed(0)
    model, products = _tiny_models()[family]
    model.train()
    for m in model.modules():  # dropout off: the steps see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ids = torch.randint(0, 96, (2, 9))
    labels = torch.tensor([0, 2]) if family == "bert" else ids
    grads = []
    for enabled, net in ((True, model), (False, model), (False, copy.deepcopy(model).double())):
        monkeypatch.setitem(dense._state, "enabled", enabled)
        net.zero_grad(set_to_none=True)
        count = Count(monkeypatch)
        loss = net(input_ids=ids, labels=labels).loss
        forward_calls = count.calls
        loss.backward()
        assert forward_calls == (products if enabled else 0)
        assert count.calls >= (2 * products - 1 if enabled else 0)  # the input gradients (the first layer's too)
        grads.append({n: p.grad.double() for n, p in net.named_parameters() if p.grad is not None})
    ours, blas, exact = grads
    assert ours.keys() == blas.keys() == exact.keys()
    for name in exact:
        blas_error = (blas[name] - exact[name]).abs().max().item()
        torch.testing.assert_close(ours[name], exact[name], atol=2 * blas_error + 1e-6, rtol=1e-5,
                                   msg=lambda m: f"{name} (F.linear's error {blas_error:.2e}): {m}")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="the deepspeed package is not installed")
def test_linear_under_deepspeed_zero3_trains_as_plain_pytorch(tmp_path) -> None:
    """A model of ``Linear`` layers built under ``deepspeed.zero.Init`` (every parameter partitioned; DeepSpeed
    gathers them around each forward and routes ``F.linear`` through its own autograd function) takes the
    steps plain PyTorch takes, with no oneDNN product on a partitioned weight (``run_dense_zero3.py``, one
    process of its own: DeepSpeed sets up a process group and patches torch; the first run builds its CPU
    communication op, a minute or two, then cached)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENFORMERS_ONEDNN_LINEAR": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = tmp_path / "zero3.json"
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("run_dense_zero3.py")), str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    got = json.loads(out.read_text())
    assert got["partitioned"] == got["names"] and len(got["names"]) == 21  # ZeRO-3 held every parameter
    assert got["calls"]["zero3"] == 0 and got["calls"]["plain"] > 0  # the plain model did run oneDNN products
    assert got["losses"]["zero3"] == pytest.approx(got["losses"]["plain"], abs=1e-5)
    for name in got["names"]:
        torch.testing.assert_close(torch.tensor(got["zero3"][name]), torch.tensor(got["plain"][name]),
                                   atol=1e-5, rtol=1e-5, msg=name)
