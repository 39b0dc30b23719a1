"""The trainer's AdamW and gradient clipping: torch's (bit for bit, or to a rounding where the fused
kernel applies the clipping), without the compiler import."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from openformers import Trainer, TrainingArguments
from openformers.training.optim import AdamW, create_optimizer
from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2

ROOT = Path(__file__).resolve().parents[2]


def _loss(model, seed: int) -> torch.Tensor:
    ids = torch.randint(1, 64, (4, 12), generator=torch.Generator().manual_seed(seed))
    return model(input_ids=ids, labels=ids).loss


def test_adamw_is_torch_adamw_bit_for_bit_and_shares_its_state_dict(tmp_path):
    ours_model, ref_model = tiny_gpt2(), tiny_gpt2()
    args = TrainingArguments(str(tmp_path), learning_rate=1e-2, weight_decay=0.1, report_to="none")
    ours = create_optimizer(ours_model, args.optimizer)
    assert type(ours) is AdamW and ours.defaults["fused"]
    names = {id(p): n for n, p in ours_model.named_parameters()}
    ref_params = dict(ref_model.named_parameters())
    ref = torch.optim.AdamW([{**{k: v for k, v in g.items() if k != "params"},
                              "params": [ref_params[names[id(p)]] for p in g["params"]]} for g in ours.param_groups])
    assert ref.defaults["fused"] is None and all(g["fused"] for g in ref.param_groups)
    for step in range(3):
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            _loss(model, step).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in ours_model.parameters())
    for (name, a), b in zip(ours_model.named_parameters(), ref_model.parameters()):
        assert torch.equal(a, b), name
    # the state dicts are interchangeable both ways
    torch.testing.assert_close(ours.state_dict(), ref.state_dict(), rtol=0, atol=0)
    again = create_optimizer(ref_model, args.optimizer)
    again.load_state_dict(ref.state_dict())
    torch.testing.assert_close(again.state_dict(), ref.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipping, and a norm within bounds
def test_clipping_matches_clip_grad_norm_bit_for_bit(tmp_path, max_norm):
    ours_model, ref_model = tiny_gpt2(), tiny_gpt2()
    args = TrainingArguments(str(tmp_path), max_grad_norm=max_norm, report_to="none")
    trainer = Trainer(model=ours_model, args=args, train_dataset=ragged_lm_data(4), data_collator=pad_collator)
    _loss(ours_model, 0).backward()
    _loss(ref_model, 0).backward()
    norm = trainer._clip_grad_norm(max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref_model.parameters(), max_norm)
    assert norm == float(ref_norm)
    for (name, a), b in zip(ours_model.named_parameters(), ref_model.parameters()):
        assert torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])
def test_fused_adamw_applies_the_clipping_in_its_step(tmp_path, max_norm):
    """With the fused AdamW the clip coefficient rides in the kernel's grad_scale: the update and the
    gradients after it are those of clip_grad_norm_ followed by torch's step (to a rounding)."""
    ours_model, ref_model = tiny_gpt2(), tiny_gpt2()
    args = TrainingArguments(str(tmp_path), learning_rate=1e-2, max_grad_norm=max_norm, report_to="none")
    trainer = Trainer(model=ours_model, args=args, train_dataset=ragged_lm_data(4), data_collator=pad_collator)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    ref = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, weight_decay=0.0, fused=True)
    before = {n: p.detach().clone() for n, p in ours_model.named_parameters()}
    _loss(ours_model, 0).backward()
    _loss(ref_model, 0).backward()
    norm = trainer._clip_grad_norm(max_norm)
    clipping = max_norm < norm
    assert (getattr(trainer.optimizer, "grad_scale", None) is not None) == clipping  # no gradient pass of its own when it clips
    trainer.optimizer.step()
    trainer.optimizer.grad_scale = None
    assert norm == float(torch.nn.utils.clip_grad_norm_(ref_model.parameters(), max_norm))
    ref.step()
    for (name, a), b in zip(ours_model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9, msg=name)
        torch.testing.assert_close(a, b, rtol=torch.finfo(a.dtype).eps, atol=1e-7, msg=name)  # one rounding of w
        assert not torch.equal(a, before[name]), name
    if clipping:  # the clipped gradients have the asked norm
        total = torch.nn.utils.get_total_norm([p.grad for p in ours_model.parameters()])
        assert abs(float(total) - max_norm) < 1e-6


def test_training_does_not_import_the_compiler(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from openformers import Trainer, TrainingArguments
        from tests.training.helpers import pad_collator, ragged_lm_data, tiny_gpt2
        args = TrainingArguments({str(tmp_path)!r}, max_steps=2, per_device_train_batch_size=4, save_steps=2,
                                 report_to="none", disable_tqdm=True)
        Trainer(model=tiny_gpt2(), args=args, train_dataset=ragged_lm_data(8), data_collator=pad_collator).train()
        print("compiler imported:", "torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "compiler imported: False" in out


def test_pre_optimizer_step_callbacks_see_clipped_gradients(tmp_path):
    """As in transformers, on_pre_optimizer_step runs after clipping; a callback that implements it
    reads clipped gradients (the clipping then stays out of the fused kernel)."""
    from openformers import TrainerCallback

    seen = []

    class Probe(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            seen.append(float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])))

    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, max_grad_norm=1e-3,
                             report_to="none", disable_tqdm=True, save_strategy="no")
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=ragged_lm_data(8), data_collator=pad_collator,
                      callbacks=[Probe()])
    assert trainer.callback_handler.handles("on_pre_optimizer_step")
    assert not trainer.callback_handler.handles("on_optimizer_step")  # only the no-op defaults there
    trainer.train()
    assert len(seen) == 2 and all(abs(n - 1e-3) < 1e-7 for n in seen), seen
