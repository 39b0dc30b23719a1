"""Logits processors and warpers: exact masks on known distributions, and agreement with transformers."""
from __future__ import annotations

import math

import pytest
import torch

from openformers.generation import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    LogitNormalization,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

INF = float("inf")


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()


def kept(scores: torch.Tensor) -> list[int]:
    return torch.nonzero(scores[0] > -INF).flatten().tolist()


IDS = torch.tensor([[1, 2]])


def test_temperature():
    s = torch.tensor([[1.0, 2.0, -4.0]])
    torch.testing.assert_close(TemperatureLogitsWarper(0.5)(IDS, s), s * 2)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            TemperatureLogitsWarper(bad)


def test_top_k_exact_and_ties():
    s = logits_of([0.1, 0.4, 0.2, 0.3])
    assert kept(TopKLogitsWarper(2)(IDS, s)) == [1, 3]
    ties = torch.tensor([[1.0, 3.0, 3.0, 2.0]])
    assert kept(TopKLogitsWarper(1)(IDS, ties)) == [1, 2]  # ties with the k-th survive
    assert kept(TopKLogitsWarper(1, min_tokens_to_keep=3)(IDS, s)) == [1, 2, 3]
    assert kept(TopKLogitsWarper(10)(IDS, s)) == [0, 1, 2, 3]
    out = TopKLogitsWarper(2, filter_value=-5.0)(IDS, s)
    assert out[0, 0].item() == -5.0
    with pytest.raises(ValueError, match="top_k"):
        TopKLogitsWarper(0)


def test_top_p_exact():
    s = logits_of([0.5, 0.3, 0.15, 0.05])
    assert kept(TopPLogitsWarper(0.5)(IDS, s)) == [0]
    assert kept(TopPLogitsWarper(0.7)(IDS, s)) == [0, 1]
    assert kept(TopPLogitsWarper(0.81)(IDS, s)) == [0, 1, 2]
    assert kept(TopPLogitsWarper(1.0)(IDS, s)) == [0, 1, 2, 3]
    assert kept(TopPLogitsWarper(0.1, min_tokens_to_keep=2)(IDS, s)) == [0, 1]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="top_p"):
            TopPLogitsWarper(bad)


def test_min_p_exact():
    s = logits_of([0.5, 0.3, 0.15, 0.05])
    assert kept(MinPLogitsWarper(0.25)(IDS, s)) == [0, 1, 2]  # threshold 0.125
    assert kept(MinPLogitsWarper(0.7)(IDS, s)) == [0]
    assert kept(MinPLogitsWarper(0.7, min_tokens_to_keep=2)(IDS, s)) == [0, 1]
    with pytest.raises(ValueError, match="min_p"):
        MinPLogitsWarper(1.5)


def test_typical_exact():
    probs = [0.4, 0.3, 0.2, 0.1]
    s = logits_of(probs)
    entropy = -sum(p * math.log(p) for p in probs)
    distance = [abs(-math.log(p) - entropy) for p in probs]
    order = sorted(range(4), key=lambda i: distance[i])
    # smallest set (in typicality order) whose mass reaches 0.5
    mass, expected = 0.0, []
    for i in order:
        expected.append(i)
        mass += probs[i]
        if mass >= 0.5:
            break
    assert kept(TypicalLogitsWarper(0.5)(IDS, s)) == sorted(expected)
    with pytest.raises(ValueError, match="typical_p"):
        TypicalLogitsWarper(1.0)


def test_epsilon_and_eta():
    s = logits_of([0.6, 0.3, 0.08, 0.02])
    assert kept(EpsilonLogitsWarper(0.05)(IDS, s)) == [0, 1, 2]
    assert kept(EpsilonLogitsWarper(0.9, min_tokens_to_keep=2)(IDS, s)) == [0, 1]
    probs = torch.tensor([0.6, 0.3, 0.08, 0.02])
    entropy = -(probs * probs.log()).sum()
    eta = min(0.1, math.sqrt(0.1) * math.exp(-entropy.item()))
    assert kept(EtaLogitsWarper(0.1)(IDS, s)) == [i for i, p in enumerate(probs.tolist()) if p >= eta]
    with pytest.raises(ValueError, match="epsilon_cutoff"):
        EpsilonLogitsWarper(0.0)
    with pytest.raises(ValueError, match="eta_cutoff"):
        EtaLogitsWarper(1.0)


def test_repetition_penalty_exact():
    s = torch.tensor([[2.0, -2.0, 1.0, 4.0]])
    out = RepetitionPenaltyLogitsProcessor(2.0)(torch.tensor([[0, 1, 1]]), s)
    torch.testing.assert_close(out, torch.tensor([[1.0, -4.0, 1.0, 4.0]]))
    # the first two positions of row 0 are ignored (left padding)
    out = RepetitionPenaltyLogitsProcessor(2.0, prompt_ignore_length=torch.tensor([2]))(torch.tensor([[0, 1, 3]]), s)
    torch.testing.assert_close(out, torch.tensor([[2.0, -2.0, 1.0, 2.0]]))
    assert s.tolist() == [[2.0, -2.0, 1.0, 4.0]]  # not modified in place
    with pytest.raises(ValueError, match="repetition_penalty"):
        RepetitionPenaltyLogitsProcessor(0.0)


def test_no_repeat_ngram_exact():
    s = torch.zeros(2, 6)
    ids = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 5, 4]])
    out = NoRepeatNGramLogitsProcessor(3)(ids, s)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [3]  # "1 2" was followed by 3
    assert torch.isinf(out[1]).nonzero().flatten().tolist() == []  # "5 4" never seen before
    out = NoRepeatNGramLogitsProcessor(2)(ids, s)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [3]
    assert torch.isinf(out[1]).nonzero().flatten().tolist() == [4, 5]
    out = NoRepeatNGramLogitsProcessor(1)(ids, s)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [1, 2, 3]


def test_bad_words_and_sequence_bias():
    s = torch.zeros(2, 6)
    ids = torch.tensor([[1, 2], [2, 1]])
    out = NoBadWordsLogitsProcessor([[4], [1, 5], [2]], eos_token_id=2)(ids, s)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [4]  # [2] is EOS: never banned
    assert torch.isinf(out[1]).nonzero().flatten().tolist() == [4, 5]  # row 1 ends in 1, so 5 is banned
    out = SequenceBiasLogitsProcessor([[[3], 1.5], [[2, 4], -2.0]])(ids, s)
    assert out[0].tolist() == [0, 0, 0, 1.5, -2.0, 0]
    assert out[1].tolist() == [0, 0, 0, 1.5, 0, 0]
    with pytest.raises(ValueError, match="bad_words_ids"):
        NoBadWordsLogitsProcessor([])
    with pytest.raises(ValueError, match="vocabulary"):
        NoBadWordsLogitsProcessor([[10]])(ids, s)


def test_min_length_processors():
    s = torch.zeros(1, 5)
    eos = [2, 4]
    assert torch.isinf(MinLengthLogitsProcessor(3, eos)(IDS, s)).nonzero()[:, 1].tolist() == [2, 4]
    assert not torch.isinf(MinLengthLogitsProcessor(2, eos)(IDS, s)).any()
    p = MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=2, min_new_tokens=1, eos_token_id=4)
    assert torch.isinf(p(IDS, s)).nonzero()[:, 1].tolist() == [4]
    assert not torch.isinf(p(torch.tensor([[1, 2, 3]]), s)).any()
    with pytest.raises(ValueError, match="min_length"):
        MinLengthLogitsProcessor(-1, 2)


def test_forcing_and_suppression():
    s = torch.zeros(1, 5)
    out = ForcedBOSTokenLogitsProcessor(3)(torch.tensor([[0]]), s)
    assert kept(out) == [3]
    out = ForcedEOSTokenLogitsProcessor(3, [1, 2])(IDS, s)
    assert kept(out) == [1, 2]
    assert kept(SuppressTokensLogitsProcessor([0, 4])(IDS, s)) == [1, 2, 3]
    assert kept(SuppressTokensAtBeginLogitsProcessor([1], begin_index=2)(IDS, s)) == [0, 2, 3, 4]
    assert kept(SuppressTokensAtBeginLogitsProcessor([1], begin_index=3)(IDS, s)) == [0, 1, 2, 3, 4]
    out = InfNanRemoveLogitsProcessor()(IDS, torch.tensor([[float("nan"), INF, -INF, 1.0]]))
    assert torch.isfinite(out).all() and out[0, 0] == 0
    torch.testing.assert_close(LogitNormalization()(IDS, s).exp().sum(), torch.tensor(1.0))
    out = ExponentialDecayLengthPenalty((0, 2.0), eos_token_id=1, input_ids_seq_length=1)(IDS, torch.ones(1, 3))
    assert out.tolist() == [[1.0, 2.0, 1.0]]


def test_eos_ids_past_the_vocabulary_are_never_generated_so_never_masked():
    """A config's EOS id may lie past a small model's vocabulary (transformers' default Starcoder2 config: 50256
    with 49152 tokens): the EOS processors leave such ids out instead of failing on the index."""
    s = torch.zeros(1, 5)
    assert torch.isinf(MinLengthLogitsProcessor(9, [2, 99])(IDS, s)).nonzero()[:, 1].tolist() == [2]
    p = MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=2, min_new_tokens=1, eos_token_id=99)
    assert not torch.isinf(p(IDS, s)).any()
    assert kept(ForcedEOSTokenLogitsProcessor(3, [1, 99])(IDS, s)) == [1]
    assert torch.equal(ForcedEOSTokenLogitsProcessor(3, 99)(IDS, s), s)  # nothing to force
    out = ExponentialDecayLengthPenalty((0, 2.0), eos_token_id=[1, 99], input_ids_seq_length=1)(IDS, torch.ones(1, 3))
    assert out.tolist() == [[1.0, 2.0, 1.0]]


def test_list_composes_in_order():
    s = logits_of([0.5, 0.3, 0.15, 0.05])
    chain = LogitsProcessorList([TemperatureLogitsWarper(2.0), TopKLogitsWarper(3), TopPLogitsWarper(0.6)])
    out = chain(IDS, s)
    expected = TopPLogitsWarper(0.6)(IDS, TopKLogitsWarper(3)(IDS, s / 2.0))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "name,args",
    [
        ("TopKLogitsWarper", (7,)),
        ("TopPLogitsWarper", (0.8,)),
        ("MinPLogitsWarper", (0.05,)),
        ("TypicalLogitsWarper", (0.7,)),
        ("EpsilonLogitsWarper", (0.01,)),
        ("EtaLogitsWarper", (0.02,)),
        ("TemperatureLogitsWarper", (0.7,)),
        ("RepetitionPenaltyLogitsProcessor", (1.7,)),
        ("NoRepeatNGramLogitsProcessor", (2,)),
        ("NoBadWordsLogitsProcessor", ([[3], [5, 7], [9, 9, 11]], 2)),
        ("MinLengthLogitsProcessor", (30, [2, 4])),
        ("MinNewTokensLengthLogitsProcessor", (10, 30, 2)),
    ],
)
def test_matches_transformers(name, args):
    import transformers.generation.logits_process as ref

    import openformers.generation.logits_process as ours

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 12, (4, 20), generator=g)
    ids[:, -2:] = torch.tensor([5, 9])
    scores = torch.randn(4, 50, generator=g) * 3
    expected = getattr(ref, name)(*args)(ids, scores.clone())
    got = getattr(ours, name)(*args)(ids, scores.clone())
    torch.testing.assert_close(got, expected)
