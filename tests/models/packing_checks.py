"""Shared checks for training on packed tokens: run a model packed and padded, compare the runs."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from openformers.modules.packing import TokenPacking
from tests.models.parity import assert_close


class Counter:
    """Counts the packings made while installed; ``enabled=False`` makes every forward run padded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, enabled: bool = True) -> None:
        self.packed = 0
        original = TokenPacking.worth_it.__func__

        def worth_it(cls, attention_mask):
            found = original(cls, attention_mask) if enabled else None
            self.packed += found is not None
            return found

        monkeypatch.setattr(TokenPacking, "worth_it", classmethod(worth_it))


def run(model, inputs: dict[str, torch.Tensor], loss: Callable[[Any, dict], torch.Tensor] | None = None, **flags):
    """(output, gradients, random state after) of one seeded forward and backward; ``loss`` picks
    what to differentiate (default: the output's loss)."""
    model.zero_grad()
    torch.manual_seed(1)
    out = model(**inputs, **flags)
    (out.loss if loss is None else loss(out, inputs)).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads, torch.get_rng_state()


def packed_and_padded(model, inputs: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch,
                      loss: Callable[[Any, dict], torch.Tensor] | None = None) -> list[tuple]:
    """The run packed (exactly one packing made), then padded (none)."""
    results = []
    for enabled in (True, False):
        with monkeypatch.context() as m:
            counter = Counter(m, enabled)
            results.append(run(model, inputs, loss))
            assert counter.packed == int(enabled)
    return results


def assert_same_training(results: list[tuple], logits_mask: torch.Tensor | None = None) -> None:
    """Packed and padded runs agree: random stream, loss, gradients (and logits at real tokens)."""
    (packed, packed_grads, packed_rng), (padded, padded_grads, padded_rng) = results
    assert torch.equal(packed_rng, padded_rng)  # the same dropout draws, in the same order
    assert_close(packed.loss, padded.loss, atol=1e-6, what="loss")
    if logits_mask is not None:
        assert_close(packed.logits, padded.logits, atol=1e-5, mask=logits_mask, what="logits at real tokens")
    assert packed_grads.keys() == padded_grads.keys() and padded_grads
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
