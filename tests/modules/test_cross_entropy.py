import pytest
import torch
import torch.nn.functional as F

from openformers.modules import cross_entropy as ce
from openformers.modules.heads import causal_lm_loss


@pytest.fixture
def small_blocks(monkeypatch):
    # 3 rows of 40 classes per block: 10 rows make 3 full blocks and a partial one
    monkeypatch.setattr(ce, "_BLOCK_BYTES", 3 * 40 * 4)


def _case(dtype=torch.float32, rows=10, classes=40):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(rows, classes, generator=g) * 4).to(dtype)
    labels = torch.randint(0, classes, (rows,), generator=g)
    labels[[1, 6]] = -100
    return logits, labels


def _loss_and_grad(fn, logits, labels, **kw):
    x = logits.clone().requires_grad_()
    loss = fn(x, labels, **kw)
    upstream = torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape) if loss.dim() else torch.tensor(0.7)
    (loss * upstream).sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_torch_cross_entropy_over_blocks(small_blocks, reduction):
    logits, labels = _case()
    assert ce._block_rows(logits) == 3
    ours, g_ours = _loss_and_grad(ce.cross_entropy, logits, labels, reduction=reduction)
    ref, g_ref = _loss_and_grad(F.cross_entropy, logits, labels, reduction=reduction, ignore_index=-100)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-7)
    assert (g_ours[[1, 6]] == 0).all()  # ignored rows get no gradient


def test_row_losses_are_torch_s_bit_for_bit(small_blocks):
    # the forward runs torch's own log-softmax kernel a block at a time: the same bits per row
    logits, labels = _case(rows=11)
    ours = ce.cross_entropy(logits, labels, reduction="none")
    assert torch.equal(ours, F.cross_entropy(logits, labels, reduction="none"))


def test_half_precision_logits_compute_in_float32(small_blocks):
    logits, labels = _case(torch.bfloat16)
    ours, g_ours = _loss_and_grad(ce.cross_entropy, logits, labels)
    ref, g_ref = _loss_and_grad(lambda x, y: F.cross_entropy(x.float(), y), logits, labels)
    assert ours.dtype == torch.float32 and g_ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    # the same float32 gradient rounded once to bf16: at most one bf16 step apart
    torch.testing.assert_close(g_ours.float(), g_ref.float(), rtol=2 ** -7, atol=1e-6)


def test_keeps_no_copy_of_the_logits_for_backward():
    logits, labels = _case(rows=64, classes=512)
    for dtype in (torch.float32, torch.bfloat16):
        x = logits.to(dtype).requires_grad_()
        big = []

        def pack(t):
            if t.numel() >= x.numel():
                big.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            ce.cross_entropy(x, labels)
        assert all(t.data_ptr() == x.data_ptr() for t in big), dtype  # only the logits themselves
        big.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            F.cross_entropy(x.float(), labels)
        assert any(t.data_ptr() != x.data_ptr() for t in big)  # torch keeps its log-softmax


def test_int32_labels_are_accepted():
    logits, labels = _case()
    torch.testing.assert_close(ce.cross_entropy(logits, labels.int()), ce.cross_entropy(logits, labels))


def test_all_ignored_mean_is_nan_like_torch():
    logits, _ = _case()
    labels = torch.full((10,), -100)
    assert torch.isnan(ce.cross_entropy(logits, labels))
    assert torch.isnan(F.cross_entropy(logits, labels))
    assert ce.cross_entropy(logits, labels, reduction="sum").item() == 0.0


def test_bad_labels_and_arguments_name_the_problem():
    logits, labels = _case()
    labels[3] = 40
    with pytest.raises(ValueError, match="label 40 is outside the 40 classes"):
        ce.cross_entropy(logits, labels)
    labels[3] = -5
    with pytest.raises(ValueError, match="label -5"):
        ce.cross_entropy(logits, labels)
    with pytest.raises(ValueError, match="reduction"):
        ce.cross_entropy(logits, labels.clamp(min=0), reduction="avg")
    with pytest.raises(ValueError, match=r"\[rows, classes\]"):
        ce.cross_entropy(logits[None], labels)


def test_second_derivative_equals_torch():
    logits, labels = _case()
    v = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    hvp = []
    for fn in (ce.cross_entropy, F.cross_entropy):
        x = logits.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(x, labels), x, create_graph=True)
        (h,) = torch.autograd.grad((g * v).sum(), x)
        hvp.append(h)
    assert hvp[1].abs().max() > 0
    torch.testing.assert_close(hvp[0], hvp[1], rtol=1e-5, atol=1e-7)


def test_causal_lm_loss_uses_it_with_shift_and_item_count():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 30, generator=g, requires_grad=True)
    labels = torch.randint(0, 30, (2, 5), generator=g)
    labels[0, 2] = -100
    ref_logits = logits.detach().clone().requires_grad_()
    ours = causal_lm_loss(logits, labels, num_items_in_batch=7)
    shifted = F.cross_entropy(ref_logits[:, :-1].reshape(-1, 30), labels[:, 1:].reshape(-1), reduction="sum") / 7
    torch.testing.assert_close(ours, shifted)
    ours.backward()
    shifted.backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)
