"""wer / cer against jiwer; exact_match and squad on known values."""
import random

import jiwer
import pytest

from openformers.metrics import load
from openformers.metrics.error_rate import edit_distance


def test_wer_cer_match_jiwer():
    rng = random.Random(0)
    vocab = ["a", "b", "cé", "日本", "dd", "x"]

    def text(lo):
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, 12)))

    refs = [text(1) for _ in range(80)]
    preds = [text(0) for _ in range(80)]  # includes empty predictions
    assert load("wer").compute(predictions=preds, references=refs) == pytest.approx(jiwer.wer(refs, preds), abs=1e-12)
    assert load("cer").compute(predictions=preds, references=refs) == pytest.approx(jiwer.cer(refs, preds), abs=1e-12)
    # irregular whitespace: evaluate's transforms collapse runs of spaces before splitting
    messy_refs = ["  hello   wörld ", "a  b\tc", "x"]
    messy_preds = ["hello world", " a b c ", ""]
    assert load("wer").compute(predictions=messy_preds, references=messy_refs) == pytest.approx(
        jiwer.wer(messy_refs, messy_preds), abs=1e-12)
    cer_transform = jiwer.Compose([jiwer.RemoveMultipleSpaces(), jiwer.Strip(), jiwer.ReduceToListOfListOfChars()])
    assert load("cer").compute(predictions=messy_preds, references=messy_refs) == pytest.approx(
        jiwer.cer(messy_refs, messy_preds, reference_transform=cer_transform, hypothesis_transform=cer_transform), abs=1e-12)
    metric = load("wer")
    for p, r in zip(preds[:10], refs[:10]):
        metric.add(prediction=p, reference=r)
    assert metric.compute() == pytest.approx(jiwer.wer(refs[:10], preds[:10]), abs=1e-12)


def test_edit_distance_and_errors():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2 and edit_distance("abc", "abc") == 0
    assert load("wer").compute(predictions=["the cat"], references=["the cat"]) == 0.0
    with pytest.raises(ValueError, match="reference is empty"):
        load("wer").compute(predictions=["a"], references=["  "])
    with pytest.raises(TypeError, match="strings"):
        load("cer").compute(predictions=[1], references=["a"])


def test_exact_match_options():
    em = load("exact_match")
    preds = ["Cat 12!", "the dog", "théâtre", "yes"]
    refs = ["cat", "The dog.", "théâtre", "no"]
    assert em.compute(predictions=preds, references=refs) == {"exact_match": 0.25}
    assert em.compute(predictions=preds, references=refs, ignore_case=True, ignore_punctuation=True,
                      ignore_numbers=True) == {"exact_match": 0.5}  # "cat " != "cat"
    assert em.compute(predictions=preds, references=refs, regexes_to_ignore=[r"\s*\d+!"], ignore_case=True,
                      ignore_punctuation=True)["exact_match"] == 0.75
    with pytest.raises(TypeError, match="string"):
        em.compute(predictions=[1], references=["1"])


def test_squad_scores():
    squad = load("squad")
    preds = [{"id": "q1", "prediction_text": "The Eiffel Tower"}, {"id": "q2", "prediction_text": "in Paris, France"}]
    refs = [{"id": "q1", "answers": {"text": ["Eiffel tower", "tower"], "answer_start": [0, 7]}},
            {"id": "q2", "answers": {"text": ["Paris"], "answer_start": [3]}}]
    out = squad.compute(predictions=preds, references=refs)
    # q1 exact after normalisation; q2: 1 common token, precision 1/3, recall 1 -> f1 0.5
    assert out == {"exact_match": 50.0, "f1": pytest.approx(75.0)}
    with pytest.warns(UserWarning, match="no prediction"):
        missing = squad.compute(predictions=[preds[0], {"id": "other", "prediction_text": "Paris"}], references=refs)
    assert missing == {"exact_match": 50.0, "f1": 50.0}
    with pytest.raises(TypeError, match="prediction_text"):
        squad.compute(predictions=[{"id": "q1"}], references=refs[:1])


def test_squad_v2_by_hand():
    preds = [{"id": "a", "prediction_text": "Paris", "no_answer_probability": 0.1},
             {"id": "b", "prediction_text": "", "no_answer_probability": 0.9},
             {"id": "c", "prediction_text": "the big dog", "no_answer_probability": 0.3},
             {"id": "d", "prediction_text": "blue", "no_answer_probability": 0.6}]
    empty = {"text": [], "answer_start": []}
    refs = [{"id": "a", "answers": {"text": ["Paris"], "answer_start": [0]}}, {"id": "b", "answers": empty},
            {"id": "c", "answers": {"text": ["a dog"], "answer_start": [0]}}, {"id": "d", "answers": empty}]
    out = load("squad_v2").compute(predictions=preds, references=refs)
    # per question exact / f1: a 1/1, b 1/1 (correctly empty), c 0/(2/3), d 0/0
    expected = {"exact": 50.0, "f1": 100 * (2 + 2 / 3) / 4, "total": 4, "HasAns_exact": 50.0,
                "HasAns_f1": 100 * (1 + 2 / 3) / 2, "HasAns_total": 2, "NoAns_exact": 50.0, "NoAns_f1": 50.0,
                "NoAns_total": 2, "best_exact": 75.0, "best_exact_thresh": 0.1,
                "best_f1": 100 * (3 + 2 / 3) / 4, "best_f1_thresh": 0.3}
    assert out == pytest.approx(expected)
    # answers whose no-answer probability exceeds the threshold count as "no answer"
    strict = load("squad_v2").compute(predictions=preds, references=refs, no_answer_threshold=0.5)
    assert strict["exact"] == 75.0 and strict["NoAns_exact"] == 100.0
