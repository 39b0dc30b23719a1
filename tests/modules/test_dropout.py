"""LoRA's dropout masks (modules/dropout.py): the asked keep probability at every position,
exact scaling, a gradient through the mask, reproducible under the seed, what LoRA draws, the same
masks from the native kernel and from PyTorch, and the dropout fused with LoRA's first product."""
from __future__ import annotations

import pytest
import torch

from openformers.core import native as _native
from openformers.modules import dropout as dropout_module
from openformers.modules.dropout import dropout, dropout_product, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_every_piece_of_a_draw_keeps_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    mask = keep_mask((4000, 1000), p, torch.device("cpu"))
    assert mask.dtype == torch.bool and mask.shape == (4000, 1000)
    # each 64-bit draw feeds four neighbours: a biased piece (a draw whose top bits are never set)
    # shows up as one position in four kept at another rate
    per_piece = mask.reshape(-1, 4).float().mean(0)
    sigma = (p * (1 - p) / 1e6) ** 0.5
    assert (per_piece - (1 - p)).abs().max() < 6 * sigma, per_piece
    # neighbours are independent: both kept as often as the product of their rates
    pairs = mask.reshape(-1, 2).float()
    assert abs((pairs[:, 0] * pairs[:, 1]).mean() - (1 - p) ** 2) < 6 * sigma


def test_scaling_gradient_and_edge_cases() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 7, 11, requires_grad=True)  # 385 elements: not a whole number of draws
    y = dropout(x, 0.3, training=True)
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * (1 / 0.7))  # as F.dropout scales
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, kept.float() * (1 / 0.7))
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    assert torch.count_nonzero(dropout(x, 1.0, training=True)) == 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(x, 1.5, training=True)


def test_reproducible_under_the_seed() -> None:
    torch.manual_seed(7)
    first = keep_mask((33, 17), 0.1, torch.device("cpu"))
    torch.manual_seed(7)
    assert torch.equal(keep_mask((33, 17), 0.1, torch.device("cpu")), first)
    assert not torch.equal(keep_mask((33, 17), 0.1, torch.device("cpu")), first)


def test_lora_dropout_draws_these_masks() -> None:
    from openformers.models.llama import LlamaConfig, LlamaForCausalLM
    from openformers.peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.25, target_modules=["q_proj"],
                                                             task_type="CAUSAL_LM", init_lora_weights=False)).train()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 9, 64)
    torch.manual_seed(3)
    out = layer(x)
    torch.manual_seed(3)
    mask = keep_mask(x.shape, 0.25, x.device)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = layer.base_layer(x) + (x * mask / 0.75) @ a.t() @ b.t() * layer.scaling["default"]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


needs_native = pytest.mark.skipif(_native.compiler() is None, reason="no C compiler: the native dropout kernel is not built")


@needs_native
@pytest.mark.parametrize("n,w", [(1, 1), (7, 13), (64, 576), (5, 1027)])
def test_native_and_pytorch_masks_are_the_same(n: int, w: int) -> None:
    """The rule of dropout_native.c computed natively and with PyTorch's integer operators: one mask per seed."""
    assert dropout_module._LIBRARY.get() is not None, dropout_module._LIBRARY.error
    for p in (0.05, 0.5):
        seed = dropout_module._seed()
        assert torch.equal(dropout_module.seeded_mask(seed, n, w, p), dropout_module._mask_torch(seed, n, w, p, None))
        ids = torch.randperm(3 * n)[:n]
        native = dropout_module.seeded_mask(seed, n, w, p, ids)
        assert torch.equal(native, dropout_module._mask_torch(seed, n, w, p, ids))
        # a row hashed as id i is row i of the mask without ids
        full = dropout_module.seeded_mask(seed, 3 * n, w, p)
        assert torch.equal(native, full[ids])


def _reference_product(x: torch.Tensor, a: torch.Tensor, p: float, seed: int, ids=None) -> torch.Tensor:
    torch.manual_seed(seed)
    mask = keep_mask((x.numel() // x.shape[-1], x.shape[-1]), p, x.device, ids=ids).view(x.shape)
    return (x * mask / (1 - p)) @ a.t()


@needs_native
@pytest.mark.parametrize("shape", [(8, 64, 576), (3, 37)])
def test_dropout_product_matches_dropout_then_product(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    a = torch.randn(8, shape[-1], requires_grad=True)
    x_ref, a_ref = x.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    torch.manual_seed(11)
    out = dropout_product(x, a, 0.1)
    assert out is not None and out.shape == (*shape[:-1], 8)
    ref = _reference_product(x_ref, a_ref, 0.1, 11)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.grad, a_ref.grad, rtol=1e-5, atol=1e-3)
    assert (x.grad == 0).float().mean() > 0.05  # the dropped inputs get no gradient


@needs_native
def test_dropout_product_second_derivative_and_row_ids() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 40, requires_grad=True)
    a = torch.randn(4, 40, requires_grad=True)
    ids = torch.tensor([9, 0, 4, 3, 11, 7])
    torch.manual_seed(5)
    out = dropout_product(x, a, 0.3, ids)
    x_ref, a_ref = x.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    ref = _reference_product(x_ref, a_ref, 0.3, 5, ids)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    (gx_ref,) = torch.autograd.grad(ref.square().sum(), x_ref, create_graph=True)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5)
    (ga,) = torch.autograd.grad(gx.sum(), a)
    (ga_ref,) = torch.autograd.grad(gx_ref.sum(), a_ref)
    torch.testing.assert_close(ga, ga_ref, rtol=1e-5, atol=1e-4)


def test_dropout_product_declines_what_it_does_not_compute() -> None:
    a = torch.randn(4, 16)
    assert dropout_product(torch.randn(2, 16, dtype=torch.float64), a.double(), 0.1) is None
    assert dropout_product(torch.randn(2, 16), a, 0.0) is None
    assert dropout_product(torch.randn(2, 16).bfloat16(), a.bfloat16(), 0.1) is None


@needs_native
def test_lora_layer_gives_the_same_training_step_without_the_native_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused kernel and PyTorch's operators (OPENFORMERS_NATIVE=0) draw the same masks: the same outputs and
    gradients for the same seed."""
    from openformers.models.llama import LlamaConfig, LlamaForCausalLM
    from openformers.peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, task_type="CAUSAL_LM",
                                                             target_modules=["q_proj", "v_proj", "down_proj"],
                                                             init_lora_weights=False)).train()
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    results = []
    for native_on in ("1", "0"):
        monkeypatch.setenv("OPENFORMERS_NATIVE", native_on)
        used = []
        real = dropout_module._DropoutProduct.apply
        monkeypatch.setattr(dropout_module._DropoutProduct, "apply", lambda *a: used.append(1) or real(*a))
        torch.manual_seed(3)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        results.append((loss.detach(), grads, bool(used)))
    (loss1, grads1, used1), (loss0, grads0, used0) = results
    assert used1 and not used0
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-6)
    assert grads1.keys() == grads0.keys() and len(grads1) == 12
    for name in grads1:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-4, atol=1e-5, msg=name)


@needs_native
def test_dropout_product_runs_under_the_profiler_recording_shapes() -> None:
    """The seed rides in the autograd function's arguments: it must be one the profiler can record (a signed
    64-bit integer; an unsigned one above 2**63 made ``record_shapes=True`` fail), for every seed drawn."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(16, 32, requires_grad=True)
    a = torch.randn(4, 32, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for seed in range(12):  # about half of the drawn seeds have the top bit set
            torch.manual_seed(seed)
            dropout_product(x, a, 0.2).sum().backward()
    assert any(e.key == "_DropoutProduct" for e in prof.key_averages())


@needs_native
@pytest.mark.parametrize("rank,width", [(3, 70), (16, 64), (8, 33)])
def test_dropout_product_backward_for_other_ranks_and_widths_whatever_the_threads(rank: int, width: int) -> None:
    """Ranks and widths off the vector width, on one to three threads (each thread sums its rows' share of the
    grad of ``a``)."""
    torch.manual_seed(0)
    x0, a0 = torch.randn(40, width), torch.randn(rank, width)
    g = torch.randn(40, rank)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2, 3):
            torch.set_num_threads(n_threads)
            x, a = x0.clone().requires_grad_(), a0.clone().requires_grad_()
            torch.manual_seed(5)
            dropout_product(x, a, 0.3).backward(g)
            grads.append((x.grad, a.grad))
    finally:
        torch.set_num_threads(threads)
    x_ref, a_ref = x0.clone().requires_grad_(), a0.clone().requires_grad_()
    _reference_product(x_ref, a_ref, 0.3, 5).backward(g)
    for gx, ga in grads:
        torch.testing.assert_close(gx, x_ref.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ga, a_ref.grad, rtol=1e-5, atol=1e-4)
        assert torch.equal(gx, grads[0][0])  # each row's grad of x is computed by one thread alone
