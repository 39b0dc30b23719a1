"""Float32 training products through oneDNN (modules/dense.py): the values and gradients of
``F.linear``, taken only where they are the same computation, and used by models and LoRA."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from openformers.models.llama import LlamaConfig, LlamaForCausalLM
from openformers.core import native
from openformers.modules import dense
from openformers.modules.dense import train_linear

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


@pytest.mark.parametrize("case", ["no_grad", "bfloat16", "autocast", "disabled", "sliced_weight"])
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
    """A LoRA layer's frozen base product, its input gradient and the adapter's A run through it. (A plain
    ``nn.Linear`` of a model file runs ``F.linear``: model files hold no speed hooks.)"""
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
